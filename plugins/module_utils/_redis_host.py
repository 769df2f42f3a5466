# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a Linux host offers a Redis server: memory the service may really use, kernel settings.

Pure functions over the text of /proc and cgroup files, so that they can be unit tested; the
module apes.infra.redis_host_info reads the files and calls them.

Memory: a process is limited by MemTotal and by the memory limit of its cgroup and of every
ancestor cgroup (a container's limit sits on an ancestor of the service's cgroup; systemd's
MemoryMax= on the service's own). cgroup v1 (memory controller, memory.limit_in_bytes, "no limit"
is a page-rounded LONG_MAX) and v2 (unified hierarchy, memory.max, "no limit" is "max") are both
handled.
"""

from __future__ import annotations

import posixpath

# cgroup v1 reports "no limit" as LONG_MAX rounded down to a page; anything this large is no limit.
V1_UNLIMITED_FLOOR = 1 << 62


class HostInfoError(ValueError):
    """A /proc or cgroup file does not have the expected format."""


def parse_meminfo_total(text):
    """Return MemTotal in bytes from the text of /proc/meminfo."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                unit = fields[2].lower() if len(fields) > 2 else "b"
                factor = {"kb": 1024, "b": 1}.get(unit)
                if factor is None:
                    raise HostInfoError(f"unknown MemTotal unit {fields[2]!r}")
                return int(fields[1]) * factor
            break
    raise HostInfoError("no MemTotal line in /proc/meminfo")


def parse_proc_cgroup(text):
    """Return (version, path) of the memory cgroup from the text of /proc/<pid>/cgroup.

    version is 1 when a v1 hierarchy carries the memory controller, else 2 (unified hierarchy).
    """
    unified = None
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hier_id, controllers, path = parts
        if "memory" in controllers.split(","):
            return 1, path or "/"
        if hier_id == "0" and controllers == "":
            unified = path or "/"
    if unified is None:
        raise HostInfoError("no memory cgroup in /proc/1/cgroup")
    return 2, unified


def ancestors(path):
    """Return path and its ancestors up to the root, most specific first: /a/b -> [/a/b, /a, /]."""
    path = posixpath.normpath("/" + path.strip("/")) if path not in ("", "/") else "/"
    result = [path]
    while path != "/":
        path = posixpath.dirname(path)
        result.append(path)
    return result


def container_root(path):
    """Return the cgroup that holds a host's (or a container's) services, given PID 1's cgroup.

    systemd puts itself in init.scope beside system.slice, so the parent of init.scope is the
    root of the service tree: "/" on a host, "/docker/<id>" inside a container that shares the
    host's cgroup namespace.
    """
    path = posixpath.normpath("/" + path.strip("/")) if path not in ("", "/") else "/"
    if posixpath.basename(path) == "init.scope":
        return posixpath.dirname(path) or "/"
    return path


def parse_limit(version, text):
    """Return the limit in bytes from memory.limit_in_bytes (v1) or memory.max (v2), or None."""
    value = text.strip()
    if version == 2:
        if value == "max":
            return None
        if not value.isdigit():
            raise HostInfoError(f"unexpected memory.max value {value!r}")
        return int(value)
    if not value.isdigit():
        raise HostInfoError(f"unexpected memory.limit_in_bytes value {value!r}")
    number = int(value)
    return None if number >= V1_UNLIMITED_FLOOR else number


def limit_file(version):
    return "memory.limit_in_bytes" if version == 1 else "memory.max"


def memory_dirs(version, cgroup_mount, paths):
    """Return the directories holding each cgroup's limit file for the given cgroup paths."""
    base = posixpath.join(cgroup_mount, "memory") if version == 1 else cgroup_mount
    return [posixpath.normpath(base + ("" if p == "/" else p)) for p in paths]


def effective_memory(total, limits):
    """Return (bytes, source): the smallest of MemTotal and the cgroup limits.

    limits is a list of (cgroup_path, limit_or_None). source names what set the result.
    """
    best, source = total, "MemTotal"
    for path, limit in limits:
        if limit is not None and limit < best:
            best, source = limit, f"cgroup {path}"
    return best, source
