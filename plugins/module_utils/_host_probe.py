# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure parsing behind apes.infra.host_probe: dpkg-query and systemctl output, /etc/os-release,
/proc/net/fib_trie and /proc/net/if_inet6, file status. Standard library only (runs on targets);
every function takes text or paths, so unit tests feed recorded output."""

from __future__ import annotations

import grp
import hashlib
import ipaddress
import os
import pwd
import re
import stat

# One line per package instance. ${binary:Package} carries ":arch" only for Multi-Arch: same
# packages, so the architecture is printed too and either spelling of a name matches.
DPKG_FORMAT = "${binary:Package}\t${Package}\t${Architecture}\t${Status}\t${Version}\n"
SYSTEMCTL_PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "InvocationID",
    "FragmentPath",
    "NeedDaemonReload",
)
# ActiveState values under which the unit's processes run.
ACTIVE_STATES = ("active", "reloading", "refreshing")

_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?$")
_UNIT_FORBIDDEN = re.compile(r"[\s/*?\[\]]")


class ProbeError(Exception):
    """A request the probe cannot answer as asked (a malformed name or path)."""


def check_package_names(names):
    for name in names:
        if not isinstance(name, str) or not _PACKAGE_NAME.match(name):
            raise ProbeError(
                f"packages: {name!r} is not a Debian package name (lower case letters, digits, '+', '-', '.', "
                "optionally ':arch'); patterns are not accepted"
            )


def check_unit_names(names):
    for name in names:
        if not isinstance(name, str) or not name or name.startswith("-") or _UNIT_FORBIDDEN.search(name):
            raise ProbeError(f"units: {name!r} is not a unit name (no patterns, paths, spaces or leading '-')")


def parse_dpkg(names, output):
    """Map each requested name to {installed, version, status} from dpkg-query -W -f=DPKG_FORMAT output.

    A name dpkg does not know is not installed (status null). Of several instances (one per
    architecture) the installed one wins."""
    rows = []
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != 5:
            continue
        binary, package, arch, status, version = fields
        words = status.split()
        state = words[2] if len(words) == 3 else status
        rows.append(({binary, package, f"{package}:{arch}"}, state, version))
    result = {}
    for name in names:
        found = {"installed": False, "version": None, "status": None}
        for keys, state, version in rows:
            if name not in keys:
                continue
            installed = state == "installed"
            if installed or found["status"] is None:
                found = {"installed": installed, "version": version if installed and version else None, "status": state}
            if installed:
                break
        result[name] = found
    return result


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_systemctl_show(names, output):
    """Map each requested unit to its state from `systemctl show --property=... names...` output.

    systemctl prints one block of Key=value lines per unit, in the order asked, separated by an
    empty line. Returns None when the number of blocks does not match (unexpected output)."""
    blocks, current = [], {}
    for line in output.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    if len(blocks) != len(names):
        return None
    result = {}
    for name, props in zip(names, blocks, strict=True):
        load_state = props.get("LoadState", "")
        active_state = props.get("ActiveState", "")
        result[name] = {
            "id": props.get("Id") or None,
            "exists": load_state not in ("", "not-found"),
            "load_state": load_state or None,
            "active": active_state in ACTIVE_STATES,
            "active_state": active_state or None,
            "sub": props.get("SubState") or None,
            "enabled": props.get("UnitFileState") or None,
            "main_pid": _int(props.get("MainPID")),
            "invocation_id": props.get("InvocationID") or None,
            "fragment_path": props.get("FragmentPath") or None,
            "need_daemon_reload": props.get("NeedDaemonReload") == "yes",
        }
    return result


def parse_os_release(text):
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def os_facts(os_release_text, debian_version_text=None):
    """os_id, os_version_id and os_major; Debian testing has no VERSION_ID, so /etc/debian_version
    is used when it holds a number."""
    values = parse_os_release(os_release_text or "")
    version = values.get("VERSION_ID") or None
    if version is None and debian_version_text and re.match(r"^\d+(\.\d+)*$", debian_version_text.strip()):
        version = debian_version_text.strip()
    major = None
    if version:
        head = version.split(".")[0]
        major = int(head) if head.isdigit() else None
    return {"os_id": values.get("ID") or None, "os_version_id": version, "os_major": major}


def ipv4_from_fib_trie(text):
    """The host's own IPv4 addresses (the 'host LOCAL' leaves of /proc/net/fib_trie), loopback left out."""
    found, last = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--") or stripped.startswith("+--"):
            last = stripped[3:].strip().split()[0]
        elif "/32 host LOCAL" in stripped and last:
            try:
                address = ipaddress.IPv4Address(last)
            except ValueError:
                continue
            if not address.is_loopback and str(address) not in found:
                found.append(str(address))
    return sorted(found, key=ipaddress.IPv4Address)


def ipv6_from_if_inet6(text):
    """The host's IPv6 addresses from /proc/net/if_inet6, loopback and link-local left out (as `hostname -I`)."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or len(fields[0]) != 32:
            continue
        try:
            address = ipaddress.IPv6Address(int(fields[0], 16))
        except ValueError:
            continue
        if address.is_loopback or address.is_link_local or str(address) in found:
            continue
        found.append(str(address))
    return found


def default_route_interface(route_text):
    """The interface of the IPv4 default route with the lowest metric, from /proc/net/route."""
    best = None
    for line in route_text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        metric = _int(fields[6])
        if best is None or metric < best[0]:
            best = (metric, fields[0])
    return best[1] if best else None


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def file_facts(path, checksums=True):
    """exists, isdir, islink, mode, owner, group, uid, gid, size, sha1 of path (links followed)."""
    if not os.path.isabs(path):
        raise ProbeError(f"files: {path!r} is not an absolute path")
    islink = os.path.islink(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {
            "exists": False,
            "isdir": False,
            "islink": islink,
            "mode": None,
            "owner": None,
            "group": None,
            "uid": None,
            "gid": None,
            "size": None,
            "sha1": None,
        }
    sha1 = None
    if checksums and stat.S_ISREG(st.st_mode):
        # SHA-1 identifies content (compare with the hash filter on the controller); it protects nothing.
        digest = hashlib.sha1(usedforsecurity=False)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        sha1 = digest.hexdigest()
    return {
        "exists": True,
        "isdir": stat.S_ISDIR(st.st_mode),
        "islink": islink,
        "mode": format(stat.S_IMODE(st.st_mode), "04o"),
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "size": st.st_size,
        "sha1": sha1,
    }
