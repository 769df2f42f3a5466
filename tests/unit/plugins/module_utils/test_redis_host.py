"""Unit tests for the cgroup-aware memory logic behind apes.infra.redis_host_info.

The /proc/1/cgroup texts are the ones seen on a Debian 12 host with cgroup v1 (hybrid) inside a
systemd container sharing the host's cgroup namespace, and on a pure cgroup v2 host.
"""

from __future__ import annotations

import pytest

from ansible_collections.apes.infra.plugins.module_utils._redis_host import (
    HostInfoError,
    ancestors,
    container_root,
    effective_memory,
    limit_file,
    memory_dirs,
    parse_limit,
    parse_meminfo_total,
    parse_proc_cgroup,
)

CID = "7b1adca5957cc53d65b5eb8d0e04543857f3b910fcecd986d485e7ba0439863a"
V1_IN_CONTAINER = f"""56:perf_event:/
9:name=systemd:/docker/{CID}/init.scope
4:memory:/docker/{CID}/init.scope
3:cpuset:/docker/{CID}
0::/docker/{CID}/init.scope
"""
V2_HOST = "0::/init.scope\n"


def test_meminfo_total_in_bytes():
    assert parse_meminfo_total("MemTotal:       24684092 kB\nMemFree: 1 kB\n") == 24684092 * 1024


@pytest.mark.parametrize("text", ["MemFree: 1 kB\n", "MemTotal: lots kB\n", ""])
def test_meminfo_without_total_is_an_error(text):
    with pytest.raises(HostInfoError):
        parse_meminfo_total(text)


def test_meminfo_unknown_unit_is_an_error():
    with pytest.raises(HostInfoError, match="unit"):
        parse_meminfo_total("MemTotal: 1 MB\n")


def test_v1_memory_controller_wins_over_unified_line():
    assert parse_proc_cgroup(V1_IN_CONTAINER) == (1, f"/docker/{CID}/init.scope")


def test_v2_unified_hierarchy():
    assert parse_proc_cgroup(V2_HOST) == (2, "/init.scope")


def test_memory_controller_in_a_joint_hierarchy():
    assert parse_proc_cgroup("5:cpu,memory:/a\n") == (1, "/a")


def test_no_memory_cgroup_is_an_error():
    with pytest.raises(HostInfoError):
        parse_proc_cgroup("3:cpuset:/\n")


def test_ancestors_most_specific_first():
    assert ancestors("/docker/x/system.slice/redis-server.service") == [
        "/docker/x/system.slice/redis-server.service",
        "/docker/x/system.slice",
        "/docker/x",
        "/docker",
        "/",
    ]
    assert ancestors("/") == ["/"]
    assert ancestors("") == ["/"]


@pytest.mark.parametrize(
    ("pid1", "root"),
    [(f"/docker/{CID}/init.scope", f"/docker/{CID}"), ("/init.scope", "/"), ("/", "/"), ("/lxc/c1", "/lxc/c1")],
)
def test_container_root(pid1, root):
    assert container_root(pid1) == root


@pytest.mark.parametrize(
    ("version", "text", "limit"),
    [
        (1, "1073741824\n", 1073741824),
        (1, "9223372036854771712\n", None),
        (2, "max\n", None),
        (2, "536870912\n", 536870912),
    ],
)
def test_parse_limit(version, text, limit):
    assert parse_limit(version, text) == limit


@pytest.mark.parametrize(("version", "text"), [(1, "max"), (2, "-1"), (2, "")])
def test_parse_limit_rejects_garbage(version, text):
    with pytest.raises(HostInfoError):
        parse_limit(version, text)


def test_limit_files_and_directories():
    assert limit_file(1) == "memory.limit_in_bytes"
    assert limit_file(2) == "memory.max"
    assert memory_dirs(1, "/sys/fs/cgroup", ["/docker/x", "/"]) == [
        "/sys/fs/cgroup/memory/docker/x",
        "/sys/fs/cgroup/memory",
    ]
    assert memory_dirs(2, "/sys/fs/cgroup", ["/system.slice", "/"]) == ["/sys/fs/cgroup/system.slice", "/sys/fs/cgroup"]


def test_effective_memory_takes_the_smallest_limit():
    total = 24 * 2**30
    limits = [("/docker/x/system.slice", None), ("/docker/x", 2**30), ("/", None)]
    assert effective_memory(total, limits) == (2**30, "cgroup /docker/x")


def test_effective_memory_without_limits_is_memtotal():
    assert effective_memory(8 * 2**30, [("/", None)]) == (8 * 2**30, "MemTotal")


def test_limit_above_memtotal_does_not_count():
    assert effective_memory(2**30, [("/a", 2**31)]) == (2**30, "MemTotal")
