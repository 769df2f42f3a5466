# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure logic for the pg_tune module: what the process really has, and the settings for it.

Reading the host is split into small functions that take the text of /proc files and a root
directory under which /sys paths are looked up, so that unit tests can build fake cgroup v1 and
v2 trees in a temporary directory. The formulas follow pgtune (le0pard/pgtune, the 2025
revision); where this code differs it says why. Every formula is also documented in the
module's DOCUMENTATION.
"""

from __future__ import annotations

import math
import os

KB = 1
MB = 1024
GB = 1024 * 1024

PROFILES = ("web", "oltp", "dw", "mixed", "desktop")
STORAGE_TYPES = ("ssd", "hdd", "san", "nvme")

# pgtune's defaults for max_connections when none is given.
DEFAULT_CONNECTIONS = {"web": 200, "oltp": 300, "dw": 40, "desktop": 20, "mixed": 100}
# PostgreSQL's own default max_worker_processes, used by pgtune's work_mem formula when the
# parallel settings are not computed (fewer than 4 CPUs).
PG_DEFAULT_MAX_WORKER_PROCESSES = 8
# Values at or above this are "no limit" (cgroup v1 reports PAGE_COUNTER_MAX * page size).
_UNLIMITED = 1 << 62
# Block devices that say nothing about where data lives.
_VIRTUAL_DISK_PREFIXES = ("loop", "ram", "zram", "sr", "fd", "nbd", "dm-", "md")


class PgTuneError(ValueError):
    """Invalid input, with a message that names the offending option."""


# ---------------------------------------------------------------------------------------------
# Reading the host
# ---------------------------------------------------------------------------------------------


def parse_meminfo(text):
    """Return MemTotal from /proc/meminfo in bytes."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            return int(parts[1]) * 1024
    raise PgTuneError("MemTotal not found in /proc/meminfo")


def parse_proc_cgroup(text):
    """Parse /proc/self/cgroup into {"v1": {controller: path}, "v2": path or None}."""
    v1 = {}
    v2 = None
    for line in text.splitlines():
        if not line.strip():
            continue
        hier_id, controllers, path = line.split(":", 2)
        if hier_id == "0" and controllers == "":
            v2 = path
            continue
        for controller in controllers.split(","):
            if controller:
                v1[controller] = path
    return {"v1": v1, "v2": v2}


def parse_mountinfo(text):
    """Return the cgroup mounts from /proc/self/mountinfo.

    Each entry: {"root", "mount_point", "fstype", "options" (set of super options)}.
    """
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rest = right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        fstype = rest[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            {
                "root": _unescape(fields[3]),
                "mount_point": _unescape(fields[4]),
                "fstype": fstype,
                "options": set(rest[2].split(",")),
            }
        )
    return mounts


def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as octal.
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _cgroup_dirs(mount, path, root):
    """Directories from the process's cgroup up to the mount's root (leaf first)."""
    mount_root = mount["root"]
    if mount_root == "/":
        relative = path
    elif path == mount_root or path.startswith(mount_root.rstrip("/") + "/"):
        relative = path[len(mount_root) :]
    else:
        # A cgroup namespace whose root is the mount's root: the process sits at the top.
        relative = "/"
    base = os.path.join(root, mount["mount_point"].lstrip("/"))
    parts = [p for p in relative.split("/") if p]
    dirs = []
    for depth in range(len(parts), -1, -1):
        dirs.append(os.path.join(base, *parts[:depth]))
    return dirs


def _read(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _v2_mount(mounts):
    for mount in mounts:
        if mount["fstype"] == "cgroup2":
            return mount
    return None


def _v1_mount(mounts, controller):
    for mount in mounts:
        if mount["fstype"] == "cgroup" and controller in mount["options"]:
            return mount
    return None


def cgroup_memory_limit(proc_cgroup_text, mountinfo_text, root="/"):
    """Return (limit_bytes or None, description) for the lowest memory limit on the way up.

    cgroup v2 (memory.max) is used where the memory controller is enabled on the unified
    hierarchy; otherwise cgroup v1 (memory.limit_in_bytes). Every level from the process's own
    cgroup up to the visible root counts, because a parent's limit binds its children.
    """
    groups = parse_proc_cgroup(proc_cgroup_text)
    mounts = parse_mountinfo(mountinfo_text)
    v2 = _v2_mount(mounts)
    if v2 is not None and groups["v2"] is not None:
        dirs = _cgroup_dirs(v2, groups["v2"], root)
        if any(_read(os.path.join(d, "memory.max")) is not None for d in dirs):
            return _lowest(dirs, "memory.max", "cgroup v2", groups["v2"])
    v1 = _v1_mount(mounts, "memory")
    if v1 is not None and "memory" in groups["v1"]:
        dirs = _cgroup_dirs(v1, groups["v1"]["memory"], root)
        return _lowest(dirs, "memory.limit_in_bytes", "cgroup v1", groups["v1"]["memory"])
    return None, "no cgroup memory controller"


def _lowest(dirs, filename, label, path):
    lowest = None
    for directory in dirs:
        raw = _read(os.path.join(directory, filename))
        if raw is None or raw == "max":
            continue
        try:
            value = int(raw)
        except ValueError:
            continue
        if value >= _UNLIMITED:
            continue
        if lowest is None or value < lowest:
            lowest = value
    if lowest is None:
        return None, f"{label} {path}: no memory limit"
    return lowest, f"{label} {path}: {filename}"


def cgroup_cpu_limit(proc_cgroup_text, mountinfo_text, root="/"):
    """Return (cpus as float or None, description): the lowest CPU quota on the way up.

    cgroup v2: cpu.max ("quota period" or "max period"); cgroup v1: cpu.cfs_quota_us (-1 for
    none) over cpu.cfs_period_us.
    """
    groups = parse_proc_cgroup(proc_cgroup_text)
    mounts = parse_mountinfo(mountinfo_text)
    v2 = _v2_mount(mounts)
    if v2 is not None and groups["v2"] is not None:
        dirs = _cgroup_dirs(v2, groups["v2"], root)
        values = [_read(os.path.join(d, "cpu.max")) for d in dirs]
        if any(v is not None for v in values):
            quotas = []
            for raw in values:
                if raw is None:
                    continue
                quota, _sep, period = raw.partition(" ")
                if quota != "max" and int(period or 100000) > 0:
                    quotas.append(int(quota) / int(period or 100000))
            if quotas:
                return min(quotas), f"cgroup v2 {groups['v2']}: cpu.max"
            return None, f"cgroup v2 {groups['v2']}: no CPU quota"
    controller = "cpu" if "cpu" in groups["v1"] else None
    v1 = _v1_mount(mounts, "cpu") if controller else None
    if v1 is not None:
        dirs = _cgroup_dirs(v1, groups["v1"]["cpu"], root)
        quotas = []
        for directory in dirs:
            quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
            period = _read(os.path.join(directory, "cpu.cfs_period_us"))
            if quota is None or period is None:
                continue
            if int(quota) > 0 and int(period) > 0:
                quotas.append(int(quota) / int(period))
        if quotas:
            return min(quotas), f"cgroup v1 {groups['v1']['cpu']}: cpu.cfs_quota_us"
        return None, f"cgroup v1 {groups['v1']['cpu']}: no CPU quota"
    return None, "no cgroup cpu controller"


def effective_memory(meminfo_bytes, cgroup_limit):
    """The memory PostgreSQL can use: the cgroup limit when lower than physical memory."""
    if cgroup_limit is not None and cgroup_limit < meminfo_bytes:
        return cgroup_limit, True
    return meminfo_bytes, False


def effective_cpus(affinity_count, quota):
    """CPUs this process may use: the CPU set, capped by the quota (rounded up, at least 1)."""
    cpus = affinity_count
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return max(1, cpus)


def storage_from_sys(major, minor, root="/", mount_source=None):
    """Classify the storage under a data directory from sysfs.

    Returns (storage, description) with storage one of ssd, hdd, nvme, or None when sysfs says
    nothing (overlay or network file systems with no block device and disks that disagree).
    The block device of the file system is used when it has one (a partition's queue is its
    disk's); else the device named as the mount's source; else, when every physical disk of the
    host agrees, that answer.
    """
    sys_block = os.path.join(root, "sys")
    candidates = []
    if major != 0:
        candidates.append(os.path.join(sys_block, "dev", "block", f"{major}:{minor}"))
    if mount_source and mount_source.startswith("/dev/"):
        candidates.append(os.path.join(sys_block, "class", "block", os.path.basename(mount_source)))
    for candidate in candidates:
        device = os.path.realpath(candidate)
        if not os.path.isdir(device):
            continue
        if os.path.exists(os.path.join(device, "partition")):
            device = os.path.dirname(device)
        rotational = _read(os.path.join(device, "queue", "rotational"))
        if rotational in ("0", "1"):
            name = os.path.basename(device)
            return _classify(name, rotational), f"/sys/block/{name}/queue/rotational = {rotational}"
    disks = {}
    block_dir = os.path.join(sys_block, "block")
    try:
        names = sorted(os.listdir(block_dir))
    except OSError:
        names = []
    for name in names:
        if name.startswith(_VIRTUAL_DISK_PREFIXES):
            continue
        rotational = _read(os.path.join(block_dir, name, "queue", "rotational"))
        if rotational in ("0", "1"):
            disks[name] = rotational
    if disks and len(set(disks.values())) == 1:
        value = next(iter(disks.values()))
        kinds = {_classify(n, value) for n in disks}
        storage = kinds.pop() if len(kinds) == 1 else "ssd"
        return storage, "no block device behind the data directory; every disk ({}) has rotational = {}".format(
            ", ".join(disks), value
        )
    return None, "no block device behind the data directory and the disks disagree or are unknown"


def _classify(name, rotational):
    if rotational == "1":
        return "hdd"
    return "nvme" if name.startswith("nvme") else "ssd"


def mount_source_for(path, mountinfo_text):
    """The source device of the mount holding path (longest mount point prefix), or None."""
    best = None
    best_len = -1
    for line in mountinfo_text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rest = right.split()
        if len(fields) < 5 or len(rest) < 2:
            continue
        mount_point = _unescape(fields[4])
        prefix = mount_point.rstrip("/") + "/"
        if (path == mount_point or path.startswith(prefix) or mount_point == "/") and len(mount_point) > best_len:
            best = rest[1]
            best_len = len(mount_point)
    return best


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def parse_size(value, option="total_memory"):
    """Parse a size such as 16GB, 512MB, 2048kB or a number of bytes; return bytes."""
    if isinstance(value, bool):
        raise PgTuneError(f"{option}: expected a size such as 16GB, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        text = str(value).strip().lower().replace(" ", "")
        number = text.rstrip("kmgtb")
        unit = text[len(number) :] or "b"
        if unit in ("k", "m", "g", "t"):
            unit += "b"
        if unit not in _UNITS or not number:
            raise PgTuneError(f"{option}: expected a size such as 16GB, 512MB or a number of bytes, got {value!r}")
        try:
            size = int(float(number) * _UNITS[unit])
        except ValueError as exc:
            raise PgTuneError(f"{option}: expected a size such as 16GB, got {value!r}") from exc
    if size < 256 * 1024 * 1024:
        raise PgTuneError(f"{option}: {value!r} is below the 256MB these formulas are meant for")
    return size


def format_kb(kb):
    """Format kB the way PostgreSQL's SHOW does: the largest unit that divides exactly."""
    kb = int(kb)
    if kb % GB == 0:
        return f"{kb // GB}GB"
    if kb % MB == 0:
        return f"{kb // MB}MB"
    return f"{kb}kB"


def _blocks(kb):
    """Round down to whole 8kB pages (settings kept in pages would otherwise be rounded by PostgreSQL)."""
    return max(8, int(kb) // 8 * 8)


def _format_float(value):
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text or "0"


# ---------------------------------------------------------------------------------------------
# The formulas
# ---------------------------------------------------------------------------------------------


def compute_settings(memory_bytes, cpus, storage="ssd", profile="mixed", max_connections=None, version=17):
    """Return {parameter: value as postgresql.conf text} for the given resources.

    See the module's DOCUMENTATION for every formula; the comments here give the reasons.
    """
    if profile not in PROFILES:
        raise PgTuneError("profile: expected one of {}, got {!r}".format(", ".join(PROFILES), profile))
    if storage not in STORAGE_TYPES:
        raise PgTuneError("storage: expected one of {}, got {!r}".format(", ".join(STORAGE_TYPES), storage))
    if not isinstance(cpus, int) or cpus < 1:
        raise PgTuneError(f"cpus: expected a positive integer, got {cpus!r}")
    if max_connections is not None and (not isinstance(max_connections, int) or max_connections < 1):
        raise PgTuneError(f"max_connections: expected a positive integer, got {max_connections!r}")
    if not isinstance(version, int) or version < 10:
        raise PgTuneError(f"version: expected a PostgreSQL major version of 10 or later, got {version!r}")

    total_kb = memory_bytes // 1024
    connections = max_connections or DEFAULT_CONNECTIONS[profile]
    settings = {"max_connections": str(connections)}

    # Memory. desktop leaves most memory to other programs.
    shared_buffers = _blocks(total_kb // 16 if profile == "desktop" else total_kb // 4)
    settings["shared_buffers"] = format_kb(shared_buffers)
    effective_cache = _blocks(total_kb // 4 if profile == "desktop" else total_kb * 3 // 4)
    settings["effective_cache_size"] = format_kb(effective_cache)
    maintenance = total_kb // 8 if profile == "dw" else total_kb // 16
    maintenance = min(maintenance, 8 * GB)
    settings["maintenance_work_mem"] = format_kb(maintenance)
    # autovacuum workers would each take maintenance_work_mem: cap them at 2GB each.
    if maintenance >= 2 * GB:
        settings["autovacuum_work_mem"] = format_kb(2 * GB)

    # Checkpoints and WAL.
    settings["checkpoint_completion_target"] = "0.9"
    wal_buffers = shared_buffers * 3 // 100
    if wal_buffers > 16 * MB:
        wal_buffers = 16 * MB
    if 14 * MB < wal_buffers < 16 * MB:
        wal_buffers = 16 * MB
    wal_buffers = max(32, wal_buffers)
    settings["wal_buffers"] = format_kb(_blocks(wal_buffers))
    min_wal, max_wal = {
        "web": (1 * GB, 4 * GB),
        "oltp": (2 * GB, 8 * GB),
        "dw": (4 * GB, 16 * GB),
        "desktop": (100 * MB, 2 * GB),
        "mixed": (1 * GB, 4 * GB),
    }[profile]
    settings["min_wal_size"] = format_kb(min_wal)
    settings["max_wal_size"] = format_kb(max_wal)
    settings["wal_compression"] = "lz4" if version >= 15 else "on"
    if profile == "desktop":
        settings["wal_level"] = "minimal"
        settings["max_wal_senders"] = "0"

    # Planner.
    settings["default_statistics_target"] = "500" if profile == "dw" else "100"
    settings["random_page_cost"] = "4" if storage == "hdd" else "1.1"
    settings["effective_io_concurrency"] = str({"hdd": 2, "ssd": 200, "san": 300, "nvme": 1000}[storage])
    if profile in ("web", "oltp", "mixed") and version >= 12:
        # JIT compilation costs more than it saves on short queries.
        settings["jit"] = "off"

    # Parallelism: only from 4 CPUs up (pgtune).
    parallel = {}
    if cpus >= 4:
        per_gather = math.ceil(cpus / 2)
        if profile != "dw":
            per_gather = min(per_gather, 4)
        parallel["max_worker_processes"] = cpus
        parallel["max_parallel_workers_per_gather"] = per_gather
        parallel["max_parallel_workers"] = cpus
        if version >= 11:
            parallel["max_parallel_maintenance_workers"] = min(math.ceil(cpus / 2), 4)
        settings.update({k: str(v) for k, v in parallel.items()})
    if cpus >= 32:
        settings["autovacuum_max_workers"] = "5"
    elif cpus >= 16:
        settings["autovacuum_max_workers"] = "4"

    # work_mem: what is left after shared_buffers, spread over every connection and worker
    # three times (a query may sort or hash several times), never below PostgreSQL's default.
    workers = parallel.get("max_worker_processes", PG_DEFAULT_MAX_WORKER_PROCESSES)
    work_mem = (total_kb - shared_buffers) / ((connections + workers) * 3)
    work_mem = math.floor(work_mem / {"web": 1, "oltp": 1, "dw": 2, "desktop": 6, "mixed": 2}[profile])
    settings["work_mem"] = format_kb(max(work_mem, 4 * MB))

    # Huge pages pay off from 2GB of shared memory up (pgtune).
    settings["huge_pages"] = "try" if shared_buffers >= 2 * GB else "off"
    return dict(sorted(settings.items()))
