"""Unit tests for the pure logic behind apes.infra.pg_tune.

Formulas are checked at several memory and CPU sizes against values worked out by hand from the
formulas in the module's documentation. cgroup v1, v2 and hybrid hosts are faked with directory
trees in tmp_path, with the /proc/self/cgroup and /proc/self/mountinfo text that such hosts show.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.apes.infra.plugins.module_utils._pg_tune import (
    PgTuneError,
    cgroup_cpu_limit,
    cgroup_memory_limit,
    compute_settings,
    effective_cpus,
    effective_memory,
    format_kb,
    mount_source_for,
    parse_meminfo,
    parse_size,
    storage_from_sys,
)

GIB = 1024**3
CID = "86720199dbf4"

# ---------------------------------------------------------------------------------------------
# Formulas
# ---------------------------------------------------------------------------------------------

COMMON = {"checkpoint_completion_target": "0.9"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            {"memory_bytes": 2 * GIB, "cpus": 1, "storage": "hdd", "profile": "mixed", "version": 15},
            {
                "max_connections": "100",
                "shared_buffers": "512MB",
                "effective_cache_size": "1536MB",
                "maintenance_work_mem": "128MB",
                "wal_buffers": "16MB",  # 3% of 512MB = 15.4MB, rounded up to 16MB
                "min_wal_size": "1GB",
                "max_wal_size": "4GB",
                "wal_compression": "lz4",
                "default_statistics_target": "100",
                "random_page_cost": "4",
                "effective_io_concurrency": "2",
                "jit": "off",
                # (2GB - 512MB) / ((100 + 8) * 3) / 2 = 2427kB, below the 4MB floor
                "work_mem": "4MB",
                "huge_pages": "off",
            },
            id="2GB-1cpu-hdd-mixed-pg15",
        ),
        pytest.param(
            {
                "memory_bytes": 4 * GIB,
                "cpus": 2,
                "storage": "ssd",
                "profile": "web",
                "max_connections": 200,
                "version": 14,
            },
            {
                "max_connections": "200",
                "shared_buffers": "1GB",
                "effective_cache_size": "3GB",
                "maintenance_work_mem": "256MB",
                "wal_buffers": "16MB",
                "min_wal_size": "1GB",
                "max_wal_size": "4GB",
                "wal_compression": "on",
                "default_statistics_target": "100",
                "random_page_cost": "1.1",
                "effective_io_concurrency": "200",
                "jit": "off",
                "work_mem": "5041kB",  # 3GB / ((200 + 8) * 3)
                "huge_pages": "off",
            },
            id="4GB-2cpu-ssd-web-pg14",
        ),
        pytest.param(
            {"memory_bytes": 16 * GIB, "cpus": 8, "storage": "ssd", "profile": "oltp", "version": 16},
            {
                "max_connections": "300",
                "shared_buffers": "4GB",
                "effective_cache_size": "12GB",
                "maintenance_work_mem": "1GB",
                "wal_buffers": "16MB",
                "min_wal_size": "2GB",
                "max_wal_size": "8GB",
                "wal_compression": "lz4",
                "default_statistics_target": "100",
                "random_page_cost": "1.1",
                "effective_io_concurrency": "200",
                "jit": "off",
                "max_worker_processes": "8",
                "max_parallel_workers_per_gather": "4",
                "max_parallel_workers": "8",
                "max_parallel_maintenance_workers": "4",
                "work_mem": "13617kB",  # 12GB / ((300 + 8) * 3)
                "huge_pages": "try",
            },
            id="16GB-8cpu-ssd-oltp-pg16",
        ),
        pytest.param(
            {"memory_bytes": 64 * GIB, "cpus": 32, "storage": "nvme", "profile": "dw", "version": 17},
            {
                "max_connections": "40",
                "shared_buffers": "16GB",
                "effective_cache_size": "48GB",
                "maintenance_work_mem": "8GB",  # 64GB / 8, capped at 8GB
                "autovacuum_work_mem": "2GB",
                "wal_buffers": "16MB",
                "min_wal_size": "4GB",
                "max_wal_size": "16GB",
                "wal_compression": "lz4",
                "default_statistics_target": "500",
                "random_page_cost": "1.1",
                "effective_io_concurrency": "1000",
                "max_worker_processes": "32",
                "max_parallel_workers_per_gather": "16",  # dw is not capped at 4
                "max_parallel_workers": "32",
                "max_parallel_maintenance_workers": "4",
                "autovacuum_max_workers": "5",
                "work_mem": "116508kB",  # 48GB / ((40 + 32) * 3) / 2
                "huge_pages": "try",
            },
            id="64GB-32cpu-nvme-dw-pg17",
        ),
        pytest.param(
            {"memory_bytes": 8 * GIB, "cpus": 4, "storage": "hdd", "profile": "desktop", "version": 17},
            {
                "max_connections": "20",
                "shared_buffers": "512MB",
                "effective_cache_size": "2GB",
                "maintenance_work_mem": "512MB",
                "wal_buffers": "16MB",
                "min_wal_size": "100MB",
                "max_wal_size": "2GB",
                "wal_compression": "lz4",
                "wal_level": "minimal",
                "max_wal_senders": "0",
                "default_statistics_target": "100",
                "random_page_cost": "4",
                "effective_io_concurrency": "2",
                "max_worker_processes": "4",
                "max_parallel_workers_per_gather": "2",
                "max_parallel_workers": "4",
                "max_parallel_maintenance_workers": "2",
                "work_mem": "18204kB",  # 7.5GB / ((20 + 4) * 3) / 6
                "huge_pages": "off",
            },
            id="8GB-4cpu-hdd-desktop-pg17",
        ),
    ],
)
def test_compute_settings(args, expected):
    assert compute_settings(**args) == dict(sorted({**COMMON, **expected}.items()))


def test_odd_memory_is_rounded_to_pages():
    # A limit that is not a multiple of 32kB: shared_buffers must still be whole 8kB pages.
    settings = compute_settings(2 * GIB - 12 * 1024, 1, profile="mixed")
    assert settings["shared_buffers"] == "524280kB"
    assert int(settings["shared_buffers"][:-2]) % 8 == 0
    assert int(settings["effective_cache_size"][:-2]) % 8 == 0


def test_small_memory_keeps_minimums():
    settings = compute_settings(256 * 1024**2, 1, profile="desktop")
    assert settings["shared_buffers"] == "16MB"
    assert settings["wal_buffers"] == "488kB"  # 3% of 16MB, whole pages
    assert settings["work_mem"] == "4MB"


def test_parallel_settings_start_at_four_cpus():
    assert "max_worker_processes" not in compute_settings(8 * GIB, 3)
    assert compute_settings(8 * GIB, 4)["max_parallel_workers_per_gather"] == "2"
    assert compute_settings(8 * GIB, 16)["max_parallel_workers_per_gather"] == "4"
    assert compute_settings(8 * GIB, 16)["autovacuum_max_workers"] == "4"
    assert compute_settings(8 * GIB, 4, version=10)["max_parallel_workers"] == "4"
    assert "max_parallel_maintenance_workers" not in compute_settings(8 * GIB, 4, version=10)


def test_jit_and_compression_follow_version():
    assert compute_settings(8 * GIB, 2, profile="web", version=11).get("jit") is None
    assert compute_settings(8 * GIB, 2, profile="web", version=12)["jit"] == "off"
    assert "jit" not in compute_settings(8 * GIB, 2, profile="dw")
    assert compute_settings(8 * GIB, 2, version=14)["wal_compression"] == "on"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"profile": "analytics"}, "profile: expected one of web, oltp, dw, mixed, desktop"),
        ({"storage": "tape"}, "storage: expected one of"),
        ({"cpus": 0}, "cpus: expected a positive integer"),
        ({"max_connections": 0}, "max_connections: expected a positive integer"),
        ({"version": 9}, "version: expected a PostgreSQL major version"),
    ],
)
def test_bad_input_names_the_option(kwargs, fragment):
    args = {"memory_bytes": 4 * GIB, "cpus": 2, **kwargs}
    with pytest.raises(PgTuneError, match=fragment):
        compute_settings(**args)


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("16GB", 16 * GIB), ("512MB", 512 * 1024**2), ("1.5GB", 3 * GIB // 2), ("2g", 2 * GIB), (GIB, GIB)],
)
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["lots", "16XB", "", "GB", "100MB", True])
def test_parse_size_refuses(value):
    with pytest.raises(PgTuneError, match="total_memory"):
        parse_size(value)


@pytest.mark.parametrize(
    ("kb", "text"), [(1024 * 1024, "1GB"), (1536 * 1024, "1536MB"), (5041, "5041kB"), (16384, "16MB")]
)
def test_format_kb_matches_show(kb, text):
    assert format_kb(kb) == text


def test_parse_meminfo():
    assert parse_meminfo("MemTotal:       24576000 kB\nMemFree: 1 kB\n") == 24576000 * 1024
    with pytest.raises(PgTuneError):
        parse_meminfo("MemFree: 1 kB\n")


def test_effective_memory_and_cpus():
    assert effective_memory(24 * GIB, 2 * GIB) == (2 * GIB, True)
    assert effective_memory(24 * GIB, None) == (24 * GIB, False)
    assert effective_memory(4 * GIB, 8 * GIB) == (4 * GIB, False)
    assert effective_cpus(2, 1.0) == 1
    assert effective_cpus(8, 2.5) == 3
    assert effective_cpus(4, None) == 4
    assert effective_cpus(2, 0.2) == 1
    assert effective_cpus(2, 16.0) == 2


# ---------------------------------------------------------------------------------------------
# cgroups
# ---------------------------------------------------------------------------------------------

# What a Docker container with the host's cgroup namespace sees on a cgroup v1 (hybrid) host:
# the test machines' containers, with systemd inside.
V1_CGROUP = f"""12:memory:/docker/{CID}
11:cpu,cpuacct:/docker/{CID}
10:cpuset:/docker/{CID}
1:name=systemd:/docker/{CID}
0::/docker/{CID}
"""
V1_MOUNTINFO = """1403 1161 0:193 / / rw,relatime master:504 - overlay overlay rw,lowerdir=/x
1416 1407 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,size=4096k
1417 1416 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
1419 1416 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
1420 1416 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
1426 1416 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# A cgroup v2 host (Debian 12/13 default), process in a systemd service inside a container
# with a private cgroup namespace: the mount's root is the container's cgroup.
V2_CGROUP = "0::/system.slice/postgresql@17-main.service\n"
V2_MOUNTINFO = """30 1 0:25 / / rw - ext4 /dev/vda1 rw
40 30 0:35 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
"""


def write(root, path, text):
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n")


def test_v1_memory_limit_of_the_container(tmp_path):
    write(tmp_path, f"/sys/fs/cgroup/memory/docker/{CID}/memory.limit_in_bytes", str(2 * GIB))
    write(tmp_path, "/sys/fs/cgroup/memory/docker/memory.limit_in_bytes", "9223372036854771712")
    write(tmp_path, "/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712")
    limit, source = cgroup_memory_limit(V1_CGROUP, V1_MOUNTINFO, root=str(tmp_path))
    assert limit == 2 * GIB
    assert source == f"cgroup v1 /docker/{CID}: memory.limit_in_bytes"


def test_v1_parent_limit_binds_a_child_without_one(tmp_path):
    cgroup = f"12:memory:/docker/{CID}/system.slice/postgresql@15-main.service\n"
    leaf = f"/sys/fs/cgroup/memory/docker/{CID}/system.slice/postgresql@15-main.service"
    write(tmp_path, f"{leaf}/memory.limit_in_bytes", "9223372036854771712")
    write(tmp_path, f"/sys/fs/cgroup/memory/docker/{CID}/system.slice/memory.limit_in_bytes", "9223372036854771712")
    write(tmp_path, f"/sys/fs/cgroup/memory/docker/{CID}/memory.limit_in_bytes", str(3 * GIB))
    limit, _source = cgroup_memory_limit(cgroup, V1_MOUNTINFO, root=str(tmp_path))
    assert limit == 3 * GIB


def test_v1_without_limit(tmp_path):
    write(tmp_path, f"/sys/fs/cgroup/memory/docker/{CID}/memory.limit_in_bytes", "9223372036854771712")
    limit, source = cgroup_memory_limit(V1_CGROUP, V1_MOUNTINFO, root=str(tmp_path))
    assert limit is None
    assert "no memory limit" in source


def test_v1_private_namespace_reads_the_mount_root(tmp_path):
    # Docker's default (private cgroup namespace): the process is at "/" and the mount's root
    # is the container's own cgroup.
    cgroup = "12:memory:/\n"
    mountinfo = f"1420 1416 0:32 /docker/{CID} /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    write(tmp_path, "/sys/fs/cgroup/memory/memory.limit_in_bytes", str(GIB))
    assert cgroup_memory_limit(cgroup, mountinfo, root=str(tmp_path))[0] == GIB


def test_v1_cpu_quota(tmp_path):
    base = f"/sys/fs/cgroup/cpu,cpuacct/docker/{CID}"
    write(tmp_path, f"{base}/cpu.cfs_quota_us", "150000")
    write(tmp_path, f"{base}/cpu.cfs_period_us", "100000")
    write(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us", "-1")
    write(tmp_path, "/sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us", "100000")
    quota, source = cgroup_cpu_limit(V1_CGROUP, V1_MOUNTINFO, root=str(tmp_path))
    assert quota == 1.5
    assert source.startswith("cgroup v1")
    assert effective_cpus(2, quota) == 2


def test_v1_no_cpu_quota(tmp_path):
    base = f"/sys/fs/cgroup/cpu,cpuacct/docker/{CID}"
    write(tmp_path, f"{base}/cpu.cfs_quota_us", "-1")
    write(tmp_path, f"{base}/cpu.cfs_period_us", "100000")
    assert cgroup_cpu_limit(V1_CGROUP, V1_MOUNTINFO, root=str(tmp_path)) == (
        None,
        f"cgroup v1 /docker/{CID}: no CPU quota",
    )


def test_hybrid_host_ignores_controllerless_unified_mount(tmp_path):
    # The unified hierarchy of a hybrid host has no memory controller (no memory.max files):
    # v1 must be used.
    (tmp_path / "sys/fs/cgroup/unified/docker" / CID).mkdir(parents=True)
    write(tmp_path, f"/sys/fs/cgroup/memory/docker/{CID}/memory.limit_in_bytes", str(2 * GIB))
    limit, source = cgroup_memory_limit(V1_CGROUP, V1_MOUNTINFO, root=str(tmp_path))
    assert (limit, source.split()[1]) == (2 * GIB, "v1")


def test_v2_memory_max_up_the_tree(tmp_path):
    write(tmp_path, "/sys/fs/cgroup/system.slice/postgresql@17-main.service/memory.max", "max")
    write(tmp_path, "/sys/fs/cgroup/system.slice/memory.max", str(6 * GIB))
    write(tmp_path, "/sys/fs/cgroup/memory.max", str(8 * GIB))
    limit, source = cgroup_memory_limit(V2_CGROUP, V2_MOUNTINFO, root=str(tmp_path))
    assert limit == 6 * GIB
    assert source == "cgroup v2 /system.slice/postgresql@17-main.service: memory.max"


def test_v2_unlimited(tmp_path):
    write(tmp_path, "/sys/fs/cgroup/system.slice/postgresql@17-main.service/memory.max", "max")
    write(tmp_path, "/sys/fs/cgroup/system.slice/memory.max", "max")
    assert cgroup_memory_limit(V2_CGROUP, V2_MOUNTINFO, root=str(tmp_path))[0] is None


def test_v2_cpu_max(tmp_path):
    write(tmp_path, "/sys/fs/cgroup/system.slice/postgresql@17-main.service/cpu.max", "max 100000")
    write(tmp_path, "/sys/fs/cgroup/system.slice/cpu.max", "250000 100000")
    write(tmp_path, "/sys/fs/cgroup/cpu.max", "50000 50000")
    quota, _source = cgroup_cpu_limit(V2_CGROUP, V2_MOUNTINFO, root=str(tmp_path))
    assert quota == 1.0


def test_v2_host_root_namespace(tmp_path):
    # A process on a plain v2 host: the mount root is "/" and the path is the full one.
    mountinfo = "40 30 0:35 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    cgroup = "0::/system.slice/postgresql@15-main.service\n"
    write(tmp_path, "/sys/fs/cgroup/system.slice/postgresql@15-main.service/memory.max", str(GIB))
    write(tmp_path, "/sys/fs/cgroup/system.slice/postgresql@15-main.service/cpu.max", "200000 100000")
    assert cgroup_memory_limit(cgroup, mountinfo, root=str(tmp_path))[0] == GIB
    assert cgroup_cpu_limit(cgroup, mountinfo, root=str(tmp_path))[0] == 2.0


def test_no_cgroups_at_all(tmp_path):
    assert cgroup_memory_limit("", "", root=str(tmp_path)) == (None, "no cgroup memory controller")
    assert cgroup_cpu_limit("", "", root=str(tmp_path)) == (None, "no cgroup cpu controller")


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


def make_disk(root, name, rotational, major, minor, partitions=()):
    device = root / "sys/devices/virtual/block" / name
    (device / "queue").mkdir(parents=True)
    (device / "queue/rotational").write_text(f"{rotational}\n")
    (root / "sys/block").mkdir(parents=True, exist_ok=True)
    os.symlink(device, root / "sys/block" / name)
    (root / "sys/dev/block").mkdir(parents=True, exist_ok=True)
    (root / "sys/class/block").mkdir(parents=True, exist_ok=True)
    os.symlink(device, root / "sys/dev/block" / f"{major}:{minor}")
    os.symlink(device, root / "sys/class/block" / name)
    for index, part in enumerate(partitions, start=1):
        part_dir = device / part
        part_dir.mkdir()
        (part_dir / "partition").write_text(f"{index}\n")
        os.symlink(part_dir, root / "sys/dev/block" / f"{major}:{minor + index}")
        os.symlink(part_dir, root / "sys/class/block" / part)


def test_storage_of_a_partition_is_its_disk(tmp_path):
    make_disk(tmp_path, "sda", 1, 8, 0, partitions=["sda1"])
    make_disk(tmp_path, "sdb", 0, 8, 16)
    assert storage_from_sys(8, 1, root=str(tmp_path)) == ("hdd", "/sys/block/sda/queue/rotational = 1")
    assert storage_from_sys(8, 16, root=str(tmp_path))[0] == "ssd"


def test_storage_nvme(tmp_path):
    make_disk(tmp_path, "nvme0n1", 0, 259, 0, partitions=["nvme0n1p1"])
    assert storage_from_sys(259, 1, root=str(tmp_path))[0] == "nvme"


def test_storage_from_mount_source(tmp_path):
    # btrfs and some others report an anonymous device (major 0): use the mount's source.
    make_disk(tmp_path, "vdb", 0, 252, 16)
    assert storage_from_sys(0, 45, root=str(tmp_path), mount_source="/dev/vdb")[0] == "ssd"


def test_storage_overlay_uses_agreeing_disks(tmp_path):
    # The test machines: overlayfs in a container, one virtio disk (rotational = 1), loop and
    # zram devices that say nothing.
    make_disk(tmp_path, "vda", 1, 252, 0)
    make_disk(tmp_path, "loop0", 0, 7, 0)
    make_disk(tmp_path, "zram0", 0, 251, 0)
    storage, source = storage_from_sys(0, 193, root=str(tmp_path), mount_source="overlay")
    assert storage == "hdd"
    assert "every disk (vda) has rotational = 1" in source


def test_storage_unknown_when_disks_disagree(tmp_path):
    make_disk(tmp_path, "sda", 1, 8, 0)
    make_disk(tmp_path, "sdb", 0, 8, 16)
    assert storage_from_sys(0, 50, root=str(tmp_path))[0] is None


def test_mount_source_for_longest_prefix():
    mountinfo = (
        "1 0 0:1 / / rw - overlay overlay rw\n"
        "2 1 8:17 / /var/lib/postgresql rw - ext4 /dev/sdb1 rw\n"
        "3 1 8:1 / /var rw - ext4 /dev/sda1 rw\n"
    )
    assert mount_source_for("/var/lib/postgresql/17/main", mountinfo) == "/dev/sdb1"
    assert mount_source_for("/var/log", mountinfo) == "/dev/sda1"
    assert mount_source_for("/etc", mountinfo) == "overlay"
