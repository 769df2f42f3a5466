"""Unit tests for the parsing behind apes.infra.host_probe, fed with output in the formats that
dpkg-query, systemctl and the kernel print."""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.apes.infra.plugins.module_utils._host_probe import (
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

# dpkg-query -W -f='${binary:Package}\t${Package}\t${Architecture}\t${Status}\t${Version}\n'
DPKG = (
    "bash\tbash\tamd64\tinstall ok installed\t5.2.15-2+b8\n"
    "libc6:amd64\tlibc6\tamd64\tinstall ok installed\t2.36-9+deb12u9\n"
    "libc6:i386\tlibc6\ti386\tdeinstall ok config-files\t2.36-9+deb12u7\n"
    "redis-server\tredis-server\tamd64\tdeinstall ok config-files\t5:7.0.15-1~deb12u1\n"
    "postgresql-15\tpostgresql-15\tamd64\thold ok installed\t15.10-0+deb12u1\n"
    "nginx\tnginx\tamd64\tunknown ok not-installed\t\n"
)

# systemctl show --property=Id,LoadState,... redis-server.service nosuch.service redis (order as asked)
SYSTEMCTL = """Id=redis-server.service
LoadState=loaded
ActiveState=active
SubState=running
UnitFileState=enabled
MainPID=4242
InvocationID=0b5e1f3c8a4b4f1e9d2c7a6b5e4d3c2b
FragmentPath=/lib/systemd/system/redis-server.service
NeedDaemonReload=yes

Id=nosuch.service
LoadState=not-found
ActiveState=inactive
SubState=dead
UnitFileState=
MainPID=0
InvocationID=
FragmentPath=
NeedDaemonReload=no

Id=redis-server.service
LoadState=loaded
ActiveState=reloading
SubState=running
UnitFileState=enabled
MainPID=4242
InvocationID=0b5e1f3c8a4b4f1e9d2c7a6b5e4d3c2b
FragmentPath=/lib/systemd/system/redis-server.service
NeedDaemonReload=no
"""

# /proc/net/fib_trie of a host with eth0 10.0.0.11/24, a secondary 10.0.0.12 and docker0.
FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.0.0/24 2 0 2
        |-- 10.0.0.0
           /24 link UNICAST
        |-- 10.0.0.11
           /32 host LOCAL
        |-- 10.0.0.12
           /32 host LOCAL
        |-- 10.0.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     |-- 172.17.0.1
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.0.0.11
        /32 host LOCAL
"""

# /proc/net/if_inet6: loopback, a global address, a link-local one.
IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000011 02 40 00 80     eth0
fe800000000000000211223344556677 02 40 20 80     eth0
"""

ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


def test_dpkg_states():
    names = ["bash", "libc6", "libc6:i386", "redis-server", "postgresql-15", "nginx", "unknown-pkg"]
    result = parse_dpkg(names, DPKG)
    assert result["bash"] == {"installed": True, "version": "5.2.15-2+b8", "status": "installed"}
    assert result["libc6"]["installed"], "of two architectures, the installed one counts"
    assert result["libc6:i386"] == {"installed": False, "version": None, "status": "config-files"}
    assert result["redis-server"] == {"installed": False, "version": None, "status": "config-files"}
    assert result["postgresql-15"] == {"installed": True, "version": "15.10-0+deb12u1", "status": "installed"}
    assert result["nginx"] == {"installed": False, "version": None, "status": "not-installed"}
    assert result["unknown-pkg"] == {"installed": False, "version": None, "status": None}


@pytest.mark.parametrize("name", ["", "Bash", "redis*", "-x", "a b", "../x"])
def test_package_names_are_checked(name):
    with pytest.raises(ProbeError, match="not a Debian package name"):
        check_package_names([name])


def test_systemctl_show_blocks_follow_the_order_asked():
    names = ["redis-server.service", "nosuch.service", "redis"]
    units = parse_systemctl_show(names, SYSTEMCTL)
    assert units["redis-server.service"] == {
        "id": "redis-server.service",
        "exists": True,
        "load_state": "loaded",
        "active": True,
        "active_state": "active",
        "sub": "running",
        "enabled": "enabled",
        "main_pid": 4242,
        "invocation_id": "0b5e1f3c8a4b4f1e9d2c7a6b5e4d3c2b",
        "fragment_path": "/lib/systemd/system/redis-server.service",
        "need_daemon_reload": True,
    }
    assert units["nosuch.service"]["exists"] is False
    assert units["nosuch.service"]["enabled"] is None
    assert units["nosuch.service"]["main_pid"] == 0
    assert units["nosuch.service"]["invocation_id"] is None
    assert units["redis"]["active"], "reloading counts as active"
    assert units["redis"]["id"] == "redis-server.service"


def test_systemctl_show_unexpected_block_count():
    assert parse_systemctl_show(["a.service"], SYSTEMCTL) is None


@pytest.mark.parametrize("name", ["", "-H", "redis*", "a b", "/dev/sda", "x[1]"])
def test_unit_names_are_checked(name):
    with pytest.raises(ProbeError, match="not a unit name"):
        check_unit_names([name])


def test_os_facts():
    assert os_facts('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n') == {
        "os_id": "debian",
        "os_version_id": "12",
        "os_major": 12,
    }
    # Debian testing has no VERSION_ID; /etc/debian_version says trixie/sid there.
    assert os_facts("ID=debian\n", "trixie/sid\n") == {"os_id": "debian", "os_version_id": None, "os_major": None}
    assert os_facts("ID=debian\n", "13.1\n")["os_major"] == 13
    assert os_facts("", None) == {"os_id": None, "os_version_id": None, "os_major": None}


def test_addresses():
    assert ipv4_from_fib_trie(FIB_TRIE) == ["10.0.0.11", "10.0.0.12", "172.17.0.1"]
    assert ipv6_from_if_inet6(IF_INET6) == ["2001:db8::11"]
    assert ipv4_from_fib_trie("") == []


def test_default_route_takes_the_lowest_metric():
    assert default_route_interface(ROUTE) == "eth0"
    assert default_route_interface(ROUTE.splitlines()[0]) is None


def test_file_facts(tmp_path):
    path = tmp_path / "a.conf"
    path.write_bytes(b"hello\n")
    path.chmod(0o640)
    facts = file_facts(str(path))
    assert facts["exists"]
    assert not facts["isdir"]
    assert not facts["islink"]
    assert facts["mode"] == "0640"
    assert facts["size"] == 6
    assert facts["sha1"] == hashlib.sha1(b"hello\n", usedforsecurity=False).hexdigest()
    assert facts["uid"] == os.getuid()
    assert file_facts(str(path), checksums=False)["sha1"] is None
    assert file_facts(str(tmp_path))["isdir"]
    assert file_facts(str(tmp_path))["sha1"] is None
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nothing")
    assert file_facts(str(link)) == {
        "exists": False,
        "isdir": False,
        "islink": True,
        "mode": None,
        "owner": None,
        "group": None,
        "uid": None,
        "gid": None,
        "size": None,
        "sha1": None,
    }
    with pytest.raises(ProbeError, match="absolute"):
        file_facts("relative/path")
