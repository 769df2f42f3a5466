#!/usr/bin/python
# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_probe
short_description: Read in one call everything a role needs to know about a host
version_added: 0.2.0
description:
  - Reports the host (OS, names, addresses, machine ID), and on request the state of Debian packages,
    systemd units and files, and the output of read-only commands, so that a role reads its host's state
    in one module run and decides from the result what to do.
  - Fast by design, with one Python run, at most one C(dpkg-query) process for all O(packages) and one
    C(systemctl show) process for all O(units), plus one process per entry of O(commands). The host's
    names and addresses are read from the kernel (C(/proc)) and the resolver, without C(hostname -I).
  - Where C(dpkg-query) or systemd cannot answer (no systemctl, or systemd is not PID 1, as in a plain
    container), the section is reported in RV(unavailable) with the reason, and the call still succeeds.
  - Reads only; never reports a change.
author:
  - apes.infra developers (@apes-infra)
extends_documentation_fragment:
  - apes.infra.attributes
  - apes.infra.attributes.INFO_MODULE
options:
  packages:
    description:
      - Debian package names (V(postgresql-17), or V(libc6:amd64) for one architecture), reported in
        RV(packages). A name dpkg does not know is simply not installed.
    type: list
    elements: str
    default: []
  units:
    description:
      - systemd unit names (V(redis-server.service); a name without a suffix means a C(.service)),
        reported in RV(units). Patterns are not accepted.
    type: list
    elements: str
    default: []
  files:
    description:
      - Absolute paths, reported in RV(files). Symbolic links are followed.
    type: list
    elements: path
    default: []
  checksums:
    description:
      - Compute the SHA-1 of each regular file in O(files), to compare with content rendered on the controller
        (C(content | hash('sha1'))). V(false) reads metadata only.
    type: bool
    default: true
  commands:
    description:
      - Read-only commands to run, reported in RV(commands) by name. They run in check mode too, so give only commands
        that change nothing.
      - Each runs without a shell, with C(LC_ALL=C), and a non-zero exit status does not fail the module
        (an executable that does not exist gives V(127)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The key of the result in RV(commands); unique.
        type: str
        required: true
      argv:
        description: The program and its arguments. No shell, no expansion of C($VAR) or C(~).
        type: list
        elements: str
        required: true
notes:
  - Package states come from the dpkg database, unit states from the running systemd manager
    (C(systemctl show)), so a unit file changed on disk without C(systemctl daemon-reload) shows as
    RV(units.need_daemon_reload).
seealso:
  - module: ansible.builtin.package_facts
  - module: ansible.builtin.service_facts
  - module: ansible.builtin.stat
"""

EXAMPLES = r"""
- name: Read what the role needs in one call
  apes.infra.host_probe:
    packages: [redis-server, redis-sentinel]
    units: [redis-server.service]
    files: [/etc/redis/redis.conf, /var/lib/redis]
    commands:
      - name: redis_version
        argv: [redis-server, --version]
  register: probe

- name: Install Redis only where it is missing
  ansible.builtin.apt:
    name: redis-server
  when: not probe.packages['redis-server'].installed

- name: Start it unless it runs (on hosts where systemd answers)
  ansible.builtin.systemd_service:
    name: redis-server.service
    state: started
  when:
    - "'units' not in probe.unavailable"
    - not probe.units['redis-server.service'].active

- name: Compare a file with what the controller would write
  ansible.builtin.debug:
    msg: "redis.conf differs"
  when: >-
    probe.files['/etc/redis/redis.conf'].sha1
    != (lookup('ansible.builtin.template', 'redis.conf.j2') | hash('sha1'))
"""

RETURN = r"""
host:
  description: The host itself.
  returned: always
  type: dict
  contains:
    os_id:
      description: C(ID) from C(/etc/os-release).
      type: str
      sample: debian
    os_version_id:
      description:
        - C(VERSION_ID) from C(/etc/os-release), or C(/etc/debian_version) where it is a number; null otherwise.
      type: str
      sample: "12"
    os_major:
      description: The major version as a number, or null.
      type: int
      sample: 12
    hostname:
      description: The kernel's host name.
      type: str
      sample: db1
    fqdn:
      description:
        - The canonical name the resolver gives the host name (as C(hostname -f)); the host name when it gives none.
      type: str
      sample: db1.example.net
    addresses:
      description:
        - The host's IPv4 addresses, then its IPv6 addresses, without loopback and IPv6 link-local ones (what
          C(hostname -I) prints, bridges such as C(docker0) included). Empty when the host has none.
      type: list
      elements: str
      sample: ["10.0.0.11", "2001:db8::11"]
    default_ipv4:
      description: The IPv4 address of the interface that carries the default route, or null.
      type: str
      sample: 10.0.0.11
    machine_id:
      description: The content of C(/etc/machine-id), or null.
      type: str
    architecture:
      description: The machine architecture (C(uname -m)).
      type: str
      sample: x86_64
    kernel:
      description: The kernel release (C(uname -r)).
      type: str
packages:
  description: Per name in O(packages).
  returned: always
  type: dict
  contains:
    installed:
      description: Whether the package is installed (dpkg status C(installed)).
      type: bool
    version:
      description: The installed version, or null.
      type: str
    status:
      description:
        - dpkg's package status (V(installed), V(config-files), V(half-configured), ...), or null when dpkg does
          not know the name.
      type: str
  sample:
    redis-server: {installed: true, version: "5:7.0.15-1~deb12u1", status: installed}
    redis-sentinel: {installed: false, version: null, status: null}
units:
  description: Per name in O(units). Empty when RV(unavailable) names V(units).
  returned: always
  type: dict
  contains:
    id:
      description: The unit's real name (differs from the key for an alias).
      type: str
    exists:
      description: Whether systemd knows the unit (C(LoadState) is not V(not-found)); a masked unit exists.
      type: bool
    load_state:
      description: C(LoadState) (V(loaded), V(not-found), V(masked), ...).
      type: str
    active:
      description: Whether the unit is V(active) (or reloading).
      type: bool
    active_state:
      description: C(ActiveState) (V(active), V(inactive), V(failed), V(activating), ...).
      type: str
    sub:
      description: C(SubState) (V(running), V(exited), V(dead), ...).
      type: str
    enabled:
      description: C(UnitFileState) (V(enabled), V(disabled), V(static), V(masked), ...), or null.
      type: str
    main_pid:
      description: C(MainPID), V(0) when nothing runs.
      type: int
    invocation_id:
      description: C(InvocationID), which changes at every start (compare two probes to see a restart), or null.
      type: str
    fragment_path:
      description: The unit file, or null.
      type: str
    need_daemon_reload:
      description: Whether the unit file changed on disk since systemd loaded it.
      type: bool
files:
  description: Per path in O(files).
  returned: always
  type: dict
  contains:
    exists:
      description: Whether the path exists (a dangling link does not).
      type: bool
    isdir:
      description: Whether it is a directory.
      type: bool
    islink:
      description: Whether the path itself is a symbolic link.
      type: bool
    mode:
      description: Permissions as a four-digit octal string such as V(0640), or null.
      type: str
    owner:
      description: Owner name (the number as a string when it has no name), or null.
      type: str
    group:
      description: Group name (the number as a string when it has no name), or null.
      type: str
    uid:
      description: Owner number, or null.
      type: int
    gid:
      description: Group number, or null.
      type: int
    size:
      description: Size in bytes, or null.
      type: int
    sha1:
      description: SHA-1 of a regular file's content with O(checksums=true), null otherwise.
      type: str
  sample:
    /etc/redis/redis.conf:
      exists: true
      isdir: false
      islink: false
      mode: "0640"
      owner: redis
      group: redis
      uid: 101
      gid: 102
      size: 2048
      sha1: 9d1b0e4c54c8b2b2a3f1f0f63ad3c0bb5d0b6b53
commands:
  description: Per name in O(commands), the exit status and output (trailing newlines removed).
  returned: always
  type: dict
  sample:
    redis_version: {rc: 0, stdout: "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64", stderr: ""}
unavailable:
  description:
    - Sections that could not be read, with the reason (V(units) where systemctl is missing or systemd is not
      running, V(packages) where dpkg-query is missing or fails). Empty when everything was read.
  returned: always
  type: dict
  sample:
    units: "System has not been booted with systemd as init system (PID 1). Can't operate."
"""

import fcntl
import os
import shutil
import socket
import struct

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.apes.infra.plugins.module_utils._host_probe import (
    DPKG_FORMAT,
    SYSTEMCTL_PROPERTIES,
    ProbeError,
    check_package_names,
    check_unit_names,
    default_route_interface,
    file_facts,
    ipv4_from_fib_trie,
    ipv6_from_if_inet6,
    os_facts,
    parse_dpkg,
    parse_systemctl_show,
)

C_LOCALE = {"LC_ALL": "C", "LANG": "C", "LANGUAGE": "C"}
SIOCGIFADDR = 0x8915


def _read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def _interface_ipv4(name):
    """The primary IPv4 address of an interface (ioctl SIOCGIFADDR), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(packed[20:24])


def _fqdn(hostname):
    try:
        for _family, _type, _proto, canonname, _addr in socket.getaddrinfo(
            hostname, None, 0, socket.SOCK_DGRAM, 0, socket.AI_CANONNAME
        ):
            if canonname:
                return canonname
    except (OSError, UnicodeError):
        pass
    return hostname


def host_facts():
    facts = os_facts(_read("/etc/os-release") or _read("/usr/lib/os-release"), _read("/etc/debian_version"))
    hostname = socket.gethostname()
    facts["hostname"] = hostname
    facts["fqdn"] = _fqdn(hostname)
    fib_trie = _read("/proc/net/fib_trie")
    if fib_trie is not None:
        ipv4 = ipv4_from_fib_trie(fib_trie)
    else:
        ipv4 = []
        for _index, name in socket.if_nameindex():
            address = _interface_ipv4(name)
            if address and not address.startswith("127.") and address not in ipv4:
                ipv4.append(address)
    facts["addresses"] = ipv4 + ipv6_from_if_inet6(_read("/proc/net/if_inet6") or "")
    interface = default_route_interface(_read("/proc/net/route") or "")
    facts["default_ipv4"] = _interface_ipv4(interface) if interface else None
    machine_id = (_read("/etc/machine-id") or "").strip()
    facts["machine_id"] = machine_id or None
    uname = os.uname()
    facts["architecture"] = uname.machine
    facts["kernel"] = uname.release
    return facts


def _first_lines(text, count=3):
    return " ".join(line.strip() for line in text.strip().splitlines()[:count])


def probe_packages(module, names, unavailable):
    if not names:
        return {}
    dpkg_query = module.get_bin_path("dpkg-query")
    if dpkg_query is None:
        unavailable["packages"] = "dpkg-query not found: not a Debian host"
        return {}
    rc, out, err = module.run_command(
        [dpkg_query, "-W", "-f=" + DPKG_FORMAT, "--", *names],
        environ_update=C_LOCALE,
        expand_user_and_vars=False,
    )
    # 1: some names are unknown (reported as not installed); anything else is an error.
    if rc not in (0, 1):
        unavailable["packages"] = f"dpkg-query exited {rc}: {_first_lines(err)}"
        return {}
    return parse_dpkg(names, out)


def probe_units(module, names, unavailable):
    if not names:
        return {}
    systemctl = module.get_bin_path("systemctl")
    if systemctl is None:
        unavailable["units"] = "systemctl not found: this host does not run systemd"
        return {}
    cmd = [systemctl, "show", "--no-pager", "--property=" + ",".join(SYSTEMCTL_PROPERTIES), "--", *names]
    rc, out, err = module.run_command(cmd, environ_update=C_LOCALE, expand_user_and_vars=False)
    if rc != 0:
        unavailable["units"] = _first_lines(err) or f"systemctl show exited {rc}"
        return {}
    units = parse_systemctl_show(names, out)
    if units is None:
        unavailable["units"] = "systemctl show printed an unexpected number of units"
        return {}
    return units


def run_commands(module, commands):
    results = {}
    for command in commands:
        argv = command["argv"]
        program = argv[0]
        found = program if "/" in program else shutil.which(program)
        if not found or not os.path.isfile(found):
            results[command["name"]] = {"rc": 127, "stdout": "", "stderr": f"{program}: command not found"}
            continue
        if not os.access(found, os.X_OK):
            results[command["name"]] = {"rc": 126, "stdout": "", "stderr": f"{program}: permission denied"}
            continue
        rc, out, err = module.run_command(argv, environ_update=C_LOCALE, expand_user_and_vars=False)
        results[command["name"]] = {"rc": rc, "stdout": out.rstrip("\r\n"), "stderr": err.rstrip("\r\n")}
    return results


def main():
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
            "files": {"type": "list", "elements": "path", "default": []},
            "checksums": {"type": "bool", "default": True},
            "commands": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "argv": {"type": "list", "elements": "str", "required": True},
                },
            },
        },
        supports_check_mode=True,
    )
    params = module.params
    packages = list(dict.fromkeys(params["packages"]))
    units = list(dict.fromkeys(params["units"]))
    names = [c["name"] for c in params["commands"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        module.fail_json(
            msg=f"commands: the names {', '.join(duplicates)} are given more than once; names must be unique"
        )
    empty = [c["name"] for c in params["commands"] if not c["argv"]]
    if empty:
        module.fail_json(msg=f"commands: {', '.join(empty)} has an empty argv; give the program and its arguments")
    try:
        check_package_names(packages)
        check_unit_names(units)
        files = {}
        for path in params["files"]:
            files[path] = file_facts(path, params["checksums"])
    except ProbeError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"files: cannot read {exc.filename}: {exc.strerror}; run the probe as a user that can")

    unavailable = {}
    result = {
        "changed": False,
        "host": host_facts(),
        "packages": probe_packages(module, packages, unavailable),
        "units": probe_units(module, units, unavailable),
        "files": files,
        "commands": run_commands(module, params["commands"]),
        "unavailable": unavailable,
    }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
