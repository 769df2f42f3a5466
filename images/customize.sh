#!/usr/bin/env bash
# Turns a debootstrap root filesystem into a systemd base image for test containers.
# Usage: customize.sh ROOTFS SUITE MIRROR   (APES_APT_PROXY: the apt proxy test containers try)
set -euo pipefail
root="$1" suite="$2" mirror="$3"

# Full apt sources: main suite, updates and security, like an installed Debian server.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# apt uses the local caching proxy when it answers, and goes direct otherwise, so the image
# works with or without the test platform's proxy.
mkdir -p "$root/usr/local/lib/apes-infra"
cat >"$root/usr/local/lib/apes-infra/apt-proxy-detect" <<DETECT
#!/bin/bash
proxy="${APES_APT_PROXY:-}"
if [[ -n "\$proxy" ]]; then
  hostport="\${proxy#http://}"
  if timeout 1 bash -c "exec 3<>/dev/tcp/\${hostport%:*}/\${hostport##*:}" 2>/dev/null; then
    echo "\$proxy"
    exit 0
  fi
fi
echo DIRECT
DETECT
chmod 0755 "$root/usr/local/lib/apes-infra/apt-proxy-detect"
cat >"$root/etc/apt/apt.conf.d/01apes-proxy" <<'CONF'
Acquire::http::Proxy-Auto-Detect "/usr/local/lib/apes-infra/apt-proxy-detect";
CONF
# No recommends, like the cloud images: roles name what they need.
cat >"$root/etc/apt/apt.conf.d/02apes-no-recommends" <<'CONF'
APT::Install-Recommends "false";
CONF

# Each container gets its own machine id at boot.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Units that cannot work in a container and only add noise.
for unit in getty.target systemd-firstboot.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
echo "localhost" >"$root/etc/hostname"
chroot "$root" apt-get clean
rm -rf "$root/var/lib/apt/lists/"*
# Package lists are fetched on first use; an old timestamp makes `cache_valid_time` see them as stale.
touch -d @0 "$root/var/lib/apt/lists"
