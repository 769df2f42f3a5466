# shellcheck shell=bash
# Shared functions for scripts/bootstrap, scripts/test and scripts/local-env.
# Everything here is idempotent: a second call finds the work done and returns quickly.
#
# Caches live outside the checkout so that fresh clones (CI) reuse them:
#   APES_CACHE (default /var/cache/apes-infra as root, ~/.cache/apes-infra otherwise)
#     venv-<hash>/        the pinned tools (requirements-dev.txt)
#     pip/                pip's download cache
#     images/             base image root filesystems as tarballs, keyed by build inputs
#     apt-cacher-ng/      .deb cache shared by every test container (through a local proxy)
#     go/                 Go module and build caches (collector builds)
#     logs/               one directory per test run

set -euo pipefail

APES_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $(id -u) -eq 0 ]]; then
  APES_CACHE="${APES_CACHE:-/var/cache/apes-infra}"
else
  APES_CACHE="${APES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/apes-infra}"
fi
export APES_ROOT APES_CACHE
APES_PYTHON="${APES_PYTHON:-python3}"
APES_DEBIAN_MIRROR="${APES_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
APES_APT_PROXY_PORT="${APES_APT_PROXY_PORT:-3142}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  # Installs Debian packages on this (controller) machine when missing.
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]} from Debian's archive"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

hash_of() { cat "$@" | sha256sum | cut -c1-12; }

# --- Python virtual environment with the pinned tools ----------------------------------------
ensure_venv() {
  local req="$APES_ROOT/requirements-dev.txt" venv
  venv="$APES_CACHE/venv-$(hash_of "$req" <("$APES_PYTHON" -c 'import sys; print(sys.version)'))"
  mkdir -p "$APES_CACHE"
  if [[ ! -f "$venv/.complete" ]]; then
    log "creating virtual environment $venv"
    rm -rf "$venv"
    "$APES_PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --cache-dir "$APES_CACHE/pip" -r "$req"
    touch "$venv/.complete"
  fi
  APES_VENV="$venv"
  export APES_VENV
  export PATH="$venv/bin:$PATH"
  export VIRTUAL_ENV="$venv"
}

# --- Docker engine -----------------------------------------------------------------------------
ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io
  fi
  if [[ -d /run/systemd/system ]]; then
    log "starting the Docker engine with systemd"
    as_root systemctl start docker
  else
    # No systemd on this machine (PID 1 is something else): run dockerd in the background.
    log "starting dockerd in the background (log: $APES_CACHE/dockerd.log)"
    mkdir -p "$APES_CACHE"
    as_root bash -c "nohup dockerd >>'$APES_CACHE/dockerd.log' 2>&1 </dev/null &"
  fi
  local _try
  for _try in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  # Best effort: show why, then fail with the message below (a missing log must not hide it).
  tail -n 20 "$APES_CACHE/dockerd.log" >&2 || true
  die "the Docker engine did not answer within 60 s"
}

docker_bridge_ip() {
  # The host's address on Docker's default bridge (docker0), where test containers find the
  # apt proxy. Docker 20.10 does not always record the gateway in the network's IPAM config.
  local ip
  # Empty when not recorded: the docker0 lookup below takes over.
  ip="$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' 2>/dev/null || true)"
  if [[ -z "$ip" ]]; then
    ip="$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"
  fi
  echo "$ip"
}

# --- apt cache for test containers: apt-cacher-ng on the docker0 address ----------------------
ensure_apt_proxy() {
  local ip
  ip="$(docker_bridge_ip)"
  [[ -n "$ip" ]] || die "cannot read the address of Docker's default bridge"
  if (exec 3<>"/dev/tcp/$ip/$APES_APT_PROXY_PORT") 2>/dev/null; then return 0; fi
  apt_install apt-cacher-ng
  local dir="$APES_CACHE/apt-cacher-ng"
  as_root mkdir -p "$dir/cache" "$dir/log" "$dir/run"
  as_root chown -R apt-cacher-ng: "$dir"
  log "starting apt-cacher-ng on $ip:$APES_APT_PROXY_PORT (cache: $dir/cache)"
  # Our own configuration, not the package's: its Debian backend list points at mirrors that may
  # be unreachable (ftp.debian.org); without remapping, every URL is cached as requested.
  # Bound to loopback and the docker0 address only: containers on any Docker network reach the
  # host's docker0 address through INPUT, nothing outside this machine can.
  as_root mkdir -p "$dir/conf"
  as_root tee "$dir/conf/acng.conf" >/dev/null <<CONF
CacheDir: $dir/cache
LogDir: $dir/log
SupportDir: /usr/lib/apt-cacher-ng
PidFile: $dir/run/pid
SocketPath: $dir/run/socket
Port: $APES_APT_PROXY_PORT
BindAddress: 127.0.0.1 $ip
ExThreshold: 30
ForeGround: 0
CONF
  as_root runuser -u apt-cacher-ng -- /usr/sbin/apt-cacher-ng -c "$dir/conf"
  local _try
  for _try in $(seq 20); do
    (exec 3<>"/dev/tcp/$ip/$APES_APT_PROXY_PORT") 2>/dev/null && return 0
    sleep 0.5
  done
  die "apt-cacher-ng did not start; see $dir/log"
}

# --- systemd base images (debootstrap, cached) ---------------------------------------------------
# Packages a real Debian server has; roles install what they need themselves.
APES_IMAGE_PACKAGES="python3,python3-apt,systemd,systemd-sysv,dbus,procps,iproute2,ca-certificates,sudo,acl,netbase,less"

image_inputs_hash() {
  hash_of "$APES_ROOT/images/customize.sh" <(echo "$1 $APES_IMAGE_PACKAGES $(docker_bridge_ip)")
}

ensure_image() {
  # ensure_image <debian major> <suite>
  local major="$1" suite="$2" tag="apes-infra/debian:$1" want have tarball tmp
  want="$(image_inputs_hash "$suite")"
  # Empty when the image does not exist yet: it is then built below.
  have="$(docker image inspect -f '{{index .Config.Labels "org.apes-infra.inputs"}}' "$tag" 2>/dev/null || true)"
  [[ "$have" == "$want" ]] && return 0
  tarball="$APES_CACHE/images/debian-$major-$want.tar"
  if [[ ! -f "$tarball" ]]; then
    apt_install debootstrap
    log "building the Debian $major ($suite) base image with debootstrap"
    tmp="$(mktemp -d "$APES_CACHE/images/build-$suite.XXXX")"
    as_root debootstrap --variant=minbase --include="$APES_IMAGE_PACKAGES" "$suite" "$tmp" \
      "$APES_DEBIAN_MIRROR" >"$tmp.log" 2>&1 || { tail -n 30 "$tmp.log" >&2; die "debootstrap $suite failed"; }
    as_root env APES_APT_PROXY="http://$(docker_bridge_ip):$APES_APT_PROXY_PORT" \
      bash "$APES_ROOT/images/customize.sh" "$tmp" "$suite" "$APES_DEBIAN_MIRROR"
    as_root tar -C "$tmp" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    as_root rm -rf "$tmp" "$tmp.log"
  fi
  log "importing $tag"
  docker import \
    -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
    -c "LABEL org.apes-infra.inputs=$want" "$tarball" "$tag" >/dev/null
  # Keep only the newest tarball per major version.
  find "$APES_CACHE/images" -maxdepth 1 -name "debian-$major-*.tar" ! -name "debian-$major-$want.tar" -delete
}

ensure_images() {
  mkdir -p "$APES_CACHE/images"
  ensure_image 12 bookworm &
  local p1=$!
  ensure_image 13 trixie &
  local p2=$!
  wait "$p1" || die "building the Debian 12 image failed"
  wait "$p2" || die "building the Debian 13 image failed"
}

# Tools the test suite calls outside the virtual environment (ansible-test's shellcheck test).
ensure_host_tools() {
  apt_install shellcheck git gnupg openssl
}

bootstrap_all() {
  ensure_host_tools
  ensure_venv
  ensure_docker
  ensure_apt_proxy
  ensure_images
}
