"""Replication and Sentinel: failover, writes through Sentinel, and a re-run that flips nothing back."""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

import pytest
import testinfra

SCENARIO = Path(__file__).resolve().parent.parent
HOSTS = ["apes-redis-sentinel-1", "apes-redis-sentinel-2", "apes-redis-sentinel-3"]
ADMIN = ("admin", "molecule-admin-secret-1")
APP = ("app", "molecule-app-secret-1")
SENTINEL_LOGIN = ("", "molecule-sentinel-secret-1")  # Sentinel has a password, no user name
DISCOVERY = ("discovery", "molecule-sentinel-discovery-secret-1")  # Sentinel's discovery-only user
MASTER_NAME = "apes"
DOWN_AFTER_MS = 3000  # converge.yml
FAILOVER_TIMEOUT_MS = 20000
# converge.yml: TLS only (plaintext ports closed), client certificates required. Every client
# here verifies the server against the development CA and presents the host's certificate.
PORT = 6380
SENTINEL_PORT = 26380
TLS_DIR = "/etc/redis/tls"
TLS = f"--tls --cacert {TLS_DIR}/ca.crt --cert {TLS_DIR}/server.crt --key {TLS_DIR}/server.key"
PY_TLS = {
    "ssl": True,
    "ssl_ca_certs": f"{TLS_DIR}/ca.crt",
    "ssl_certfile": f"{TLS_DIR}/server.crt",
    "ssl_keyfile": f"{TLS_DIR}/server.key",
}


@pytest.fixture(scope="module")
def hosts():
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in HOSTS}


def cli(host, user, *args: str, port: int = PORT, tls: str = TLS) -> str:
    """redis-cli as an ACL user (user[0] empty: password only), password in REDISCLI_AUTH."""
    words = " ".join(shlex.quote(a) for a in args)
    login = f"--user {user[0]} " if user[0] else ""
    result = host.run(f"REDISCLI_AUTH={shlex.quote(user[1])} redis-cli {login}-h 127.0.0.1 -p {port} {tls} {words}")
    return (result.stdout + result.stderr).strip()


def sentinel(host, *args: str) -> str:
    return cli(host, SENTINEL_LOGIN, *args, port=SENTINEL_PORT)


def address(host) -> str:
    return host.check_output("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1")


def sentinel_master(host) -> str:
    return ":".join(sentinel(host, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME).split())


def role(host) -> list[str]:
    return cli(host, ADMIN, "ROLE").splitlines()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def write_through_sentinel(host, addresses: dict[str, str], key: str, value: str) -> str:
    """Write with redis-py's Sentinel client (python3-redis, installed by the role), logged in to
    the Sentinels as the discovery user: it asks them for the master and writes there. Prints the
    address it wrote to."""
    script = f"""
from redis.sentinel import Sentinel
tls = {PY_TLS!r}
s = Sentinel([(a, {SENTINEL_PORT}) for a in {list(addresses.values())!r}],
             sentinel_kwargs={{"username": {DISCOVERY[0]!r}, "password": {DISCOVERY[1]!r}, **tls}},
             socket_timeout=2, **tls)
m = s.master_for({MASTER_NAME!r}, username={APP[0]!r}, password={APP[1]!r}, socket_timeout=2, **tls)
m.set({key!r}, {value!r})
host, port = s.discover_master({MASTER_NAME!r})
print(f"{{host}}:{{port}}")
"""
    return host.check_output(f"python3 -c {shlex.quote(script)}")


@pytest.fixture(scope="module")
def address_cache(hosts) -> dict[str, str]:
    return {name: address(h) for name, h in hosts.items()}


def test_topology_after_converge(hosts, address_cache):
    master = f"{address_cache[HOSTS[0]]}:{PORT}"
    # The first host of the group redis is the first master; the others replicate from it.
    for name, h in hosts.items():
        wait_for(lambda h=h: sentinel_master(h) == master, 30, f"{name}'s Sentinel to report {master}")
    assert role(hosts[HOSTS[0]])[0] == "master"
    for name in HOSTS[1:]:
        wait_for(
            lambda name=name: role(hosts[name])[:4] == ["slave", address_cache[HOSTS[0]], str(PORT), "connected"],
            30,
            f"{name} to replicate from the master",
        )
    # Each Sentinel sees the two replicas and the two other Sentinels; quorum two.
    for name, h in hosts.items():

        def complete(h=h):
            info = dict(zip(*[iter(sentinel(h, "SENTINEL", "MASTER", MASTER_NAME).splitlines())] * 2, strict=False))
            return info.get("num-slaves") == "2" and info.get("num-other-sentinels") == "2" and info

        info = wait_for(complete, 30, f"{name}'s Sentinel to know everyone")
        assert info["quorum"] == "2"
        assert info["down-after-milliseconds"] == str(DOWN_AFTER_MS)


def test_files_and_access(hosts):
    for h in hosts.values():
        conf = h.file("/etc/redis/sentinel.conf")
        assert (conf.user, conf.group, conf.mode) == ("redis", "redis", 0o640)
        assert re.search(r"^# apes.infra.redis sentinel base [0-9a-f]{64}$", conf.content_string, re.M)
        # Sentinel manages the topology: no replicaof in the role's file.
        assert "\nreplicaof " not in h.file("/etc/redis/redis.conf").content_string
        # Sentinel itself wants a password; a replica refuses writes.
        assert "NOAUTH" in h.run(f"redis-cli -h 127.0.0.1 -p {SENTINEL_PORT} {TLS} SENTINEL MASTERS").stdout
        # TLS only: the plaintext ports are closed, and a TLS client without a certificate is refused.
        for port in (6379, 26379):
            assert "Connection refused" in cli(h, ADMIN, "PING", port=port, tls=""), port
        no_cert = cli(h, ADMIN, "PING", tls=f"--tls --cacert {TLS_DIR}/ca.crt")
        assert "PONG" not in no_cert, no_cert
        assert cli(h, ADMIN, "PING") == "PONG"
    for name in HOSTS[1:]:
        assert "READONLY" in cli(hosts[name], APP, "SET", "app:x", "1")


def test_discovery_user_finds_the_master_and_changes_nothing(hosts, address_cache):
    """Clients log in to Sentinel as the discovery user: it finds the master, the replicas and the
    Sentinels, but may not change Sentinel; without a password nothing answers."""
    master_name = _current_master(hosts, address_cache)
    master = f"{address_cache[master_name]}:{PORT}"
    replica = address_cache[next(n for n in HOSTS if n != master_name)]
    for name, h in hosts.items():
        found = cli(h, DISCOVERY, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME, port=SENTINEL_PORT)
        assert ":".join(found.split()) == master, (name, found)
        assert MASTER_NAME in cli(h, DISCOVERY, "SENTINEL", "MASTERS", port=SENTINEL_PORT), name
        assert replica in cli(h, DISCOVERY, "SENTINEL", "REPLICAS", MASTER_NAME, port=SENTINEL_PORT), name
        refused = [
            ("SENTINEL", "FAILOVER", MASTER_NAME),
            ("SENTINEL", "REMOVE", MASTER_NAME),
            ("SENTINEL", "MONITOR", "evil", "192.0.2.1", "6379", "1"),
            ("SENTINEL", "SET", MASTER_NAME, "quorum", "1"),
            ("SENTINEL", "RESET", "*"),
            ("SENTINEL", "CONFIG", "GET", "*"),
            ("SENTINEL", "FLUSHCONFIG"),
            ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "yes"),
            ("ACL", "LIST"),
        ]
        # Sentinel has no CONFIG command of its own: SENTINEL CONFIG is its configuration.
        for words in refused:
            out = cli(h, DISCOVERY, *words, port=SENTINEL_PORT)
            assert "NOPERM" in out, (name, words, out)
        # Without a password (and with a wrong one) discovery is refused.
        anonymous = h.run(
            f"redis-cli -h 127.0.0.1 -p {SENTINEL_PORT} {TLS} SENTINEL GET-MASTER-ADDR-BY-NAME {MASTER_NAME}"
        )
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous
        wrong = cli(h, (DISCOVERY[0], "not-the-password-1"), "SENTINEL", "MASTERS", port=SENTINEL_PORT)
        assert "WRONGPASS" in wrong, wrong
        # Nothing above changed Sentinel: it still monitors the master, with quorum two.
        info = dict(zip(*[iter(sentinel(h, "SENTINEL", "MASTER", MASTER_NAME).splitlines())] * 2, strict=False))
        assert info["quorum"] == "2", (name, info)
        assert "evil" not in sentinel(h, "SENTINEL", "MASTERS")
        # The password is in the file as a hash only; the user's name is published.
        assert DISCOVERY[1] not in h.file("/etc/redis/sentinel.conf").content_string


def test_failover_writes_through_sentinel_and_rerun_changes_nothing(hosts, address_cache, run_playbook):
    old_master_name = HOSTS[0]
    old_master = hosts[old_master_name]
    old_address = f"{address_cache[old_master_name]}:{PORT}"
    assert sentinel_master(hosts[HOSTS[1]]) == old_address
    assert write_through_sentinel(hosts[HOSTS[1]], address_cache, "app:before", "1") == old_address

    # Stop the master: a replica must be promoted within down-after + failover-timeout.
    started = time.monotonic()
    old_master.run_expect([0], "systemctl stop redis-server")
    try:
        new_address = wait_for(
            lambda: (a := sentinel_master(hosts[HOSTS[1]])) != old_address and a,
            (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000,
            "a replica to be promoted",
        )
        elapsed = time.monotonic() - started
        print(f"failover: {old_address} -> {new_address} in {elapsed:.1f} s")
        new_master_name = next(n for n in HOSTS if f"{address_cache[n]}:{PORT}" == new_address)
        new_master = hosts[new_master_name]
        wait_for(lambda: role(new_master)[0] == "master", 10, "the new master to report role master")

        # Writes through Sentinel go to the new master, and the data written before is there.
        assert write_through_sentinel(hosts[HOSTS[2]], address_cache, "app:after", "2") == new_address
        assert cli(new_master, APP, "GET", "app:after") == "2"
        assert cli(new_master, APP, "GET", "app:before") == "1"
    finally:
        old_master.run_expect([0], "systemctl start redis-server")

    # The old master comes back as a plain master (no replicaof in its file); Sentinel turns it
    # into a replica of the new master.
    wait_for(
        lambda: role(old_master)[:4] == ["slave", address_cache[new_master_name], str(PORT), "connected"],
        60,
        "Sentinel to reconfigure the old master as a replica",
    )
    assert cli(old_master, APP, "GET", "app:after") == "2"

    # A re-run of the role changes nothing and flips nothing back.
    result = run_playbook(SCENARIO / "converge.yml")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    recaps = re.findall(r"^apes-redis-sentinel-[123]\s+: .*$", out, re.M)
    assert len(recaps) == 3, out[-2000:]
    assert all(re.search(r"changed=0\s", r) for r in recaps), recaps
    assert "secret-1" not in out, "a password was printed"
    assert role(new_master)[0] == "master"
    assert role(old_master)[:2] == ["slave", address_cache[new_master_name]]
    for h in hosts.values():
        assert sentinel_master(h) == new_address
        assert re.search(r"^# apes.infra.redis sentinel base ", h.file("/etc/redis/sentinel.conf").content_string, re.M)


def _current_master(hosts, address_cache) -> str:
    """The inventory name of the server the Sentinels report as master."""
    master = sentinel_master(hosts[HOSTS[0]])
    return next(n for n in HOSTS if f"{address_cache[n]}:{PORT}" == master)


def _recaps(out: str) -> list[str]:
    recaps = re.findall(r"^apes-redis-sentinel-[123]\s+: .*$", out, re.M)
    assert len(recaps) == 3, out[-2000:]
    return recaps


def test_sentinel_tag_alone_sets_what_sentinel_runs_with(hosts, run_playbook, monkeypatch):
    """--tags redis_sentinel after a quorum change: every Sentinel runs with the new quorum (SENTINEL
    SET, no restart) and records it; the same run with the old value puts it back."""
    pids = {name: h.check_output("systemctl show -p MainPID --value redis-sentinel") for name, h in hosts.items()}
    monkeypatch.setenv("ANSIBLE_RUN_TAGS", "redis_sentinel")
    for quorum in (3, 2):
        result = run_playbook(SCENARIO / "converge.yml", extra_vars={"redis_sentinel_quorum": quorum})
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-3000:]
        assert all(not re.search(r"changed=0\s", r) for r in _recaps(out)), _recaps(out)
        assert "secret-1" not in out, "a password was printed"
        for name, h in hosts.items():
            info = dict(zip(*[iter(sentinel(h, "SENTINEL", "MASTER", MASTER_NAME).splitlines())] * 2, strict=False))
            assert info["quorum"] == str(quorum), (name, info)
            assert re.search(
                rf"^sentinel monitor {MASTER_NAME} \S+ {PORT} {quorum}$",
                h.file("/etc/redis/sentinel.conf").content_string,
                re.M,
            ), name
    assert {
        name: h.check_output("systemctl show -p MainPID --value redis-sentinel") for name, h in hosts.items()
    } == pids


def test_topology_tag_alone_puts_a_stray_master_back(hosts, address_cache, run_playbook, monkeypatch):
    """With the Sentinels down, a replica that was made a master by hand: --tags redis_topology asks
    the servers (a master with replicas wins), and makes the stray server a replica again."""
    master_name = _current_master(hosts, address_cache)
    stray_name = next(n for n in HOSTS if n != master_name)
    stray = hosts[stray_name]
    for h in hosts.values():
        h.run_expect([0], "systemctl stop redis-sentinel")
    try:
        assert cli(stray, ADMIN, "REPLICAOF", "NO", "ONE") == "OK"
        assert role(stray)[0] == "master"
        monkeypatch.setenv("ANSIBLE_RUN_TAGS", "redis_topology")
        result = run_playbook(SCENARIO / "converge.yml")
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-3000:]
        assert "secret-1" not in out, "a password was printed"
        recap = next(r for r in _recaps(out) if r.startswith(stray_name))
        assert not re.search(r"changed=0\s", recap), recap
        wait_for(
            lambda: role(stray)[:4] == ["slave", address_cache[master_name], str(PORT), "connected"],
            30,
            f"{stray_name} to replicate from {master_name} again",
        )
        assert role(hosts[master_name])[0] == "master"
    finally:
        for h in hosts.values():
            h.run_expect([0], "systemctl start redis-sentinel")
    for name, h in hosts.items():
        wait_for(
            lambda h=h: sentinel_master(h) == f"{address_cache[master_name]}:{PORT}",
            30,
            f"{name}'s Sentinel to report {master_name} again",
        )


def test_bad_input_fails_before_any_change(hosts, run_playbook):
    """Each bad input stops the role on every host before any change, naming the variable: the
    quorum outside 1 to the number of Sentinels, Sentinel ports out of range, a placeholder
    secret, a weak discovery password, a wildcard announce address, and plaintext (TLS off) on
    the network addresses this scenario binds."""
    confs = {name: h.file("/etc/redis/redis.conf").content_string for name, h in hosts.items()}
    cases = [
        (
            {"redis_sentinel_quorum": 0},
            ["redis_sentinel_quorum (0) must be between 1 and the number of hosts in the group redis_sentinel (3)"],
        ),
        (
            {"redis_sentinel_quorum": 4},
            ["redis_sentinel_quorum (4) must be between 1 and the number of hosts in the group redis_sentinel (3)"],
        ),
        ({"redis_sentinel_port": 0}, ["Ports must be between 1 and 65535, not redis_sentinel_port 0"]),
        ({"redis_sentinel_tls_port": 65536}, ["Ports must be between 1 and 65535, not redis_sentinel_tls_port 65536"]),
        (
            {"redis_sentinel_password": "CHANGE-ME-in-the-vault-1"},
            ["redis_sentinel_password (the CHANGE-ME placeholder)"],
        ),
        (
            {"redis_sentinel_discovery_password": "short-1"},
            ["Missing, too short or a placeholder: redis_sentinel_discovery_password."],
        ),
        (
            {"redis_bind": ["*"]},
            ["redis_announce_host is '*' (derived from redis_bind *)", "Set redis_announce_host"],
        ),
        (
            {"redis_announce_host": "::"},
            ["redis_announce_host is '::': a wildcard or empty address", "Set redis_announce_host"],
        ),
        (
            {"redis_tls_enabled": False},
            ["plaintext Redis on an address that is not loopback", "redis_sentinel_bind", "redis_plaintext_accepted"],
        ),
    ]
    for extra, expected in cases:
        result = run_playbook(SCENARIO / "converge.yml", extra_vars=extra)
        out = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0, f"{extra} was accepted"
        for text in expected:
            assert text in out, f"{text!r} not in output for {extra}: {out[-3000:]}"
        assert "CHANGE-ME-in-the-vault-1" not in out, "a password was printed"
        assert "secret-1" not in out, "a password was printed"
        recaps = re.findall(r"apes-redis-sentinel-[123]\s+: ok=\S+\s+changed=(\d+)", out)
        assert len(recaps) == 3, out[-2000:]
        assert recaps == ["0", "0", "0"], (extra, recaps)
    assert {name: h.file("/etc/redis/redis.conf").content_string for name, h in hosts.items()} == confs
    for h in hosts.values():
        assert cli(h, ADMIN, "PING") == "PONG"


RESTORE = SCENARIO.parent.parent / "playbooks" / "redis_restore.yml"
# converge.yml's play vars that the restore needs (this scenario keeps them out of the inventory).
RESTORE_VARS = {
    "redis_admin_password": ADMIN[1],
    "redis_tls_enabled": True,
    "redis_tls_auth_clients": "yes",
    "redis_restore_confirm": True,
}


def _sentinels_agree(hosts, master: str) -> bool:
    return all(h.service("redis-sentinel").is_running and sentinel_master(h) == master for h in hosts.values())


def test_restore_under_sentinel_fails_safely_then_restores(hosts, address_cache, run_playbook):
    """On the master of a Sentinel-managed set. First a restore whose backup is damaged after the
    stop (a drop-in of this test truncates it): the rescue puts the data from before back, starts
    the server, every held Sentinel (the master's own Sentinel only through the rescue: the
    playbook's last play skips a failed host) and the timer; nothing failed over. Then a good
    restore: no failover either, and the replicas resynchronise to the restored data."""
    master_name = _current_master(hosts, address_cache)
    master = hosts[master_name]
    master_address = f"{address_cache[master_name]}:{PORT}"
    replicas = [hosts[n] for n in HOSTS if n != master_name]
    assert cli(master, APP, "SET", "app:in-the-backup", "1") == "OK"
    master.run_expect([0], "systemctl start apes-redis-backup.service")
    newest = master.check_output("ls /var/backups/redis | grep -E '^dump-.*\\.rdb$' | sort | tail -1")
    assert cli(master, APP, "SET", "app:after-the-backup", "live") == "OK"

    work = "/root/failing-restore"
    dropin = "/etc/systemd/system/redis-server.service.d/zz-test-damage-backup.conf"
    flag = "/run/apes-test-damage-backup"
    master.run_expect(
        [0],
        f"set -e; rm -rf {work}; mkdir -m 700 {work}; cp /var/backups/redis/{newest} {work}/dump-damaged.rdb; "
        f"cd {work}; sha256sum dump-damaged.rdb > dump-damaged.rdb.sha256; "
        f"printf '%s\\n' '[Service]' \"ExecStopPost=+/bin/sh -c 'if [ -e {flag} ]; then rm -f {flag}; "
        f"truncate -s 64 {work}/dump-damaged.rdb; fi'\" > {dropin}; systemctl daemon-reload; touch {flag}",
    )
    try:
        result = run_playbook(RESTORE, extra_vars={**RESTORE_VARS, "redis_restore_backup": f"{work}/dump-damaged.rdb"})
    finally:
        master.run_expect([0], f"rm -f {dropin} {flag} && systemctl daemon-reload")
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, out[-3000:]
    assert "secret-1" not in out, "a password was printed"
    assert f"The restore of {work}/dump-damaged.rdb on {master_name} failed at Start redis-server" in out, out[-3000:]
    assert "The data from before the restore is back in /var/lib/redis and redis-server runs with it" in out
    assert cli(master, APP, "GET", "app:after-the-backup") == "live"
    assert role(master)[0] == "master"
    assert master.service("apes-redis-backup.timer").is_running
    wait_for(lambda: _sentinels_agree(hosts, master_address), 30, "every Sentinel to run and report the same master")
    master.run_expect([0], f"rm -rf {work}")

    # A good restore of the same backup: the master stays the master, the replicas follow it.
    result = run_playbook(RESTORE, extra_vars={**RESTORE_VARS, "redis_restore_backup": newest})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert cli(master, APP, "GET", "app:in-the-backup") == "1"
    assert cli(master, APP, "GET", "app:after-the-backup") == ""
    assert role(master)[0] == "master"
    wait_for(lambda: _sentinels_agree(hosts, master_address), 30, "every Sentinel to report the restored master")
    for replica in replicas:
        wait_for(
            lambda replica=replica: (
                role(replica)[:4] == ["slave", address_cache[master_name], str(PORT), "connected"]
                and cli(replica, APP, "GET", "app:after-the-backup") == ""
                and cli(replica, APP, "GET", "app:in-the-backup") == "1"
            ),
            60,
            "the replicas to resynchronise to the restored data",
        )
