"""Behaviour of the redis role on Debian 12 (Redis 7.0) and Debian 13 (Redis 8.0)."""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

import pytest
import testinfra

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent
PROJECT = SCENARIO.parent.parent
RESTORE = PROJECT / "playbooks" / "redis_restore.yml"

# The scenario's test secrets (molecule/redis/vars/redis.yml).
ADMIN = ("admin", "molecule-admin-secret-1")
APP = ("app", "molecule-app-secret-1")
READER = ("reader", "molecule-reader-secret-1")
MONITORING = ("monitoring", "molecule-monitoring-secret-1")
BACKUP_DIR = "/var/backups/redis"
DATA_DIR = "/var/lib/redis"
LOG = "/var/log/redis/redis-server.log"
HOSTS = ["apes-redis-debian12", "apes-redis-debian13"]
# debian13 serves TLS only on 6380 (molecule.yml host_vars), with the development CA the role
# generated on the controller; debian12 serves plaintext on 6379.
TLS_HOST = "apes-redis-debian13"
TLS_DIR = "/etc/redis/tls"
TLS_PORT = 6380
CA = f"{TLS_DIR}/ca.crt"


def is_tls(host) -> bool:
    return host.backend.get_hostname() == TLS_HOST


def connection(host) -> str:
    """redis-cli options that reach the host's server: TLS verified against the CA, or plaintext."""
    if is_tls(host):
        return f"-h 127.0.0.1 -p {TLS_PORT} --tls --cacert {CA}"
    return "-h 127.0.0.1 -p 6379"


def cli(host, user: tuple[str, str] | None, *args: str, check: bool = False, options: str | None = None) -> str:
    """Run redis-cli as an ACL user (password in REDISCLI_AUTH, as the backup unit does)."""
    words = " ".join(shlex.quote(a) for a in args)
    target = connection(host) if options is None else options
    if user is None:
        cmd = f"redis-cli {target} {words}"
    else:
        cmd = f"REDISCLI_AUTH={shlex.quote(user[1])} redis-cli {target} --user {user[0]} {words}"
    result = host.run(cmd)
    if check:
        assert result.rc == 0, result.stderr
    return (result.stdout + result.stderr).strip()


def dev_tls_dir() -> Path:
    """The controller directory where the role generated the development CA (redis_tls_dev_dir)."""
    return Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent / ".secrets" / "redis-tls"


def dbsize(host) -> int:
    return int(cli(host, ADMIN, "DBSIZE"))


def last_start_lines(host) -> list[str]:
    """Log lines since the server last started (Redis 7.0 logs the banner at warning level)."""
    lines = host.file(LOG).content_string.splitlines()
    starts = [i for i, line in enumerate(lines) if "Redis is starting" in line]
    assert starts, "no start found in the log"
    return lines[starts[-1] :]


def test_service_and_file_permissions(host):
    service = host.service("redis-server")
    assert service.is_running
    assert service.is_enabled
    for path, user, group, mode in [
        ("/etc/redis/redis.conf", "redis", "redis", 0o640),
        ("/etc/redis/redis-runtime.conf", "redis", "redis", 0o640),
        ("/etc/redis/redis-secrets.conf", "redis", "redis", 0o640),
        ("/etc/redis/users.acl", "redis", "redis", 0o600),
        ("/etc/redis/backup.env", "root", "root", 0o600),
        (LOG, "redis", "adm", 0o640),
        (BACKUP_DIR, "redis", "redis", 0o750),
    ] + (
        [
            (TLS_DIR, "redis", "redis", 0o750),
            (f"{TLS_DIR}/server.key", "redis", "redis", 0o600),
            (f"{TLS_DIR}/server.crt", "redis", "redis", 0o640),
            (CA, "redis", "redis", 0o640),
        ]
        if is_tls(host)
        else []
    ):
        f = host.file(path)
        assert f.exists, path
        assert (f.user, f.group, f.mode) == (user, group, mode), path
    assert "Ansible managed" in host.file("/etc/redis/redis.conf").content_string


def test_passwords_never_stored_in_clear(host):
    acl = host.file("/etc/redis/users.acl").content_string
    for _user, password in (ADMIN, APP, READER, MONITORING):
        assert password not in acl
    assert "user default off" in acl
    assert re.search(r"^user app on #[0-9a-f]{64} ", acl, re.M)
    for path in ("/etc/redis/redis.conf", "/etc/redis/redis-runtime.conf"):
        content = host.file(path).content_string
        assert "secret-1" not in content, path


def test_listens_on_loopback_only(host):
    sockets = host.socket.get_listening_sockets()
    redis = [s for s in sockets if s.endswith((":6379", f":{TLS_PORT}"))]
    # TLS only: the plaintext port is closed (port 0) where TLS is on.
    assert redis == ([f"tcp://127.0.0.1:{TLS_PORT}"] if is_tls(host) else ["tcp://127.0.0.1:6379"]), sockets


def test_unauthenticated_command_gets_noauth(host):
    assert "NOAUTH" in cli(host, None, "PING")
    assert "NOAUTH" in cli(host, None, "GET", "app:x")
    # The default user is off: no password makes it usable.
    assert "WRONGPASS" in cli(host, ("default", "anything-at-all"), "PING")


@pytest.fixture(scope="module", params=[TLS_HOST])
def tls_host(request):
    """The TLS instance (its name in the test id, so that its tests stay on its worker)."""
    return testinfra.get_host(f"ansible://{request.param}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def config_get(host, name: str) -> str:
    return cli(host, ADMIN, "CONFIG", "GET", name).splitlines()[-1]


def test_tls_only_where_enabled(host):
    """debian13 serves TLS only; debian12 has no TLS port and no certificates."""
    if is_tls(host):
        assert (config_get(host, "tls-port"), config_get(host, "port")) == (str(TLS_PORT), "0")
        assert config_get(host, "tls-protocols") == "TLSv1.2 TLSv1.3"
        assert config_get(host, "tls-auth-clients") == "optional"
        assert config_get(host, "tls-replication") == "yes"
    else:
        assert (config_get(host, "tls-port"), config_get(host, "port")) == ("0", "6379")
        assert not host.file(TLS_DIR).exists
        assert "tls-" not in host.file("/etc/redis/redis.conf").content_string


def test_tls_with_the_generated_ca_authenticates_and_works(tls_host):
    """A client that verifies the server against the development CA logs in and works; the CA and
    keys stay in a private directory on the controller."""
    dev = dev_tls_dir()
    assert oct(dev.stat().st_mode & 0o777) == "0o700"
    for key in ("ca.key", f"{TLS_HOST}.key"):
        assert oct((dev / key).stat().st_mode & 0o777) == "0o600", key
    assert tls_host.file(CA).content_string == (dev / "ca.crt").read_text()
    assert not tls_host.file(f"{TLS_DIR}/ca.key").exists, "the CA key must never leave the controller"

    tls = f"-h 127.0.0.1 -p {TLS_PORT} --tls --cacert {CA}"
    assert cli(tls_host, APP, "SET", "app:tls", "over-tls", options=tls) == "OK"
    assert cli(tls_host, READER, "GET", "app:tls", options=tls) == "over-tls"
    # TLS does not replace the password: still NOAUTH without one, NOPERM where the ACL says so.
    assert "NOAUTH" in cli(tls_host, None, "PING", options=tls)
    assert "NOPERM" in cli(tls_host, APP, "FLUSHALL", options=tls)
    # The served certificate names the addresses clients use (and verifies for 127.0.0.1).
    served = tls_host.check_output(
        f"openssl s_client -connect 127.0.0.1:{TLS_PORT} -CAfile {CA} -verify_return_error "
        "-verify_ip 127.0.0.1 </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName"
    )
    assert "IP Address:127.0.0.1" in served, served
    assert f"DNS:{TLS_HOST}" in served, served


def test_tls_refuses_plaintext_and_the_wrong_ca(tls_host):
    # Plaintext to the TLS port: the server drops the connection; the plaintext port is closed.
    plain = tls_host.run(f"REDISCLI_AUTH={ADMIN[1]} redis-cli -h 127.0.0.1 -p {TLS_PORT} --user admin PING")
    assert plain.rc != 0, plain.stdout + plain.stderr
    assert "PONG" not in plain.stdout
    closed = tls_host.run(f"REDISCLI_AUTH={ADMIN[1]} redis-cli -h 127.0.0.1 -p 6379 --user admin PING")
    assert closed.rc != 0
    assert "Connection refused" in closed.stdout + closed.stderr
    # Another CA (made here, never trusted by the server): the client refuses the server's
    # certificate, and the server refuses a client certificate that CA signed.
    tls_host.run_expect(
        [0],
        "set -e; d=/root/wrong-ca; rm -rf $d; mkdir -m 700 $d; cd $d; "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
        "-subj '/CN=not the apes.infra CA' -keyout ca.key -out ca.crt 2>/dev/null; "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=intruder "
        "-keyout client.key -out client.csr 2>/dev/null; "
        "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out client.crt 2>/dev/null",
    )
    wrong_ca = cli(tls_host, ADMIN, "PING", options=f"-h 127.0.0.1 -p {TLS_PORT} --tls --cacert /root/wrong-ca/ca.crt")
    assert "certificate verify failed" in wrong_ca, wrong_ca
    intruder = cli(
        tls_host,
        ADMIN,
        "PING",
        options=f"-h 127.0.0.1 -p {TLS_PORT} --tls --cacert {CA} --cert /root/wrong-ca/client.crt "
        "--key /root/wrong-ca/client.key",
    )
    assert "PONG" not in intruder, intruder
    # A client certificate from the right CA (the host's own, as the role and the backup unit use it) is accepted.
    mutual = f"-h 127.0.0.1 -p {TLS_PORT} --tls --cacert {CA} --cert {TLS_DIR}/server.crt --key {TLS_DIR}/server.key"
    assert cli(tls_host, ADMIN, "PING", options=mutual) == "PONG"


def test_tls_certificate_rotated_without_restart(tls_host, run_playbook, monkeypatch):
    """A new certificate is loaded live (CONFIG SET of the same files), not with a restart, by a run
    limited to the tag redis_tls (the operator's rotation), and no key appears in the output."""

    def served_serial() -> str:
        return tls_host.check_output(
            f"openssl s_client -connect 127.0.0.1:{TLS_PORT} -CAfile {CA} -verify_return_error </dev/null 2>/dev/null"
            " | openssl x509 -noout -serial"
        )

    before = served_serial()
    pid = tls_host.check_output("systemctl show -p MainPID --value redis-server")
    # Sign a new certificate for the same key: the role notices the missing certificate on the controller.
    (dev_tls_dir() / f"{TLS_HOST}.crt").unlink()
    monkeypatch.setenv("ANSIBLE_RUN_TAGS", "redis_tls")  # ansible-playbook --tags redis_tls
    result = run_playbook(SCENARIO / "redis.yml", limit=TLS_HOST)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "PRIVATE KEY" not in out, "a key was printed"
    assert "Check the TLS settings" in out, "the variables are checked in a TLS-only run too"
    assert "RUNNING HANDLER [apes.infra.redis : Reload the Redis TLS certificates]" in out
    assert "RUNNING HANDLER [apes.infra.redis : Restart redis-server]" not in out
    assert served_serial() != before
    assert tls_host.check_output("systemctl show -p MainPID --value redis-server") == pid
    assert cli(tls_host, ADMIN, "PING") == "PONG"


def test_app_user_is_refused_dangerous_commands(host):
    assert cli(host, APP, "SET", "app:greeting", "hello") == "OK"
    assert cli(host, APP, "GET", "app:greeting") == "hello"
    for command in (["FLUSHALL"], ["FLUSHDB"], ["CONFIG", "GET", "maxmemory"], ["KEYS", "*"], ["SHUTDOWN"]):
        assert "NOPERM" in cli(host, APP, *command), command
    # DEBUG is refused twice over: enable-debug-command no (for everyone), and the ACL (-@dangerous).
    assert "DEBUG command not allowed" in cli(host, APP, "DEBUG", "SLEEP", "0")
    dryrun = cli(host, ADMIN, "ACL", "DRYRUN", "app", "DEBUG", "SLEEP", "0")
    assert "no permissions to run the 'debug' command" in dryrun
    # Key patterns apply: nothing outside app:*.
    assert "NOPERM" in cli(host, APP, "SET", "other:key", "x")
    assert dbsize(host) > 0, "FLUSHALL must not have run"


def test_reader_user_reads_only(host):
    cli(host, APP, "SET", "app:read-me", "1", check=True)
    assert cli(host, READER, "GET", "app:read-me") == "1"
    assert "NOPERM" in cli(host, READER, "SET", "app:read-me", "2")


def test_monitoring_user_runs_info_and_nothing_else(host):
    info = cli(host, MONITORING, "INFO", "server")
    assert "redis_version:" in info
    assert cli(host, MONITORING, "PING") == "PONG"
    for command in (
        ["GET", "app:greeting"],
        ["SET", "x", "1"],
        ["CONFIG", "GET", "*"],
        ["CLIENT", "LIST"],
        ["ACL", "LIST"],
    ):
        assert "NOPERM" in cli(host, MONITORING, *command), command


def test_maxmemory_follows_the_memory_the_process_sees(host):
    name = host.backend.get_hostname()
    maxmemory = int(cli(host, ADMIN, "CONFIG", "GET", "maxmemory").split()[-1])
    if name == "apes-redis-debian12":
        # The platform has memory: 1g (cgroup v1 limit on the container): 60 % of 1 GiB, not of the host's RAM.
        assert maxmemory == int(1024**3 * 0.6)
    else:
        total = int(host.check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo")) * 1024
        assert maxmemory == int(total * 0.6)
    assert cli(host, ADMIN, "CONFIG", "GET", "maxmemory-policy").split()[-1] == "noeviction"


def test_tcp_backlog_never_above_somaxconn(host):
    somaxconn = int(host.file("/proc/sys/net/core/somaxconn").content_string)
    backlog = int(cli(host, ADMIN, "CONFIG", "GET", "tcp-backlog").split()[-1])
    assert backlog == somaxconn
    if host.backend.get_hostname() == "apes-redis-debian12":
        # prepare.yml made /proc/sys/net writable there: os_tuning's 65535 is live, and Redis follows it.
        assert somaxconn == 65535


def test_persistence_is_rdb_and_aof(host):
    def config(name: str) -> str:
        return cli(host, ADMIN, "CONFIG", "GET", name).splitlines()[-1]

    assert config("appendonly") == "yes"
    assert config("appendfsync") == "everysec"
    assert config("save") == "3600 1 300 100 60 10000"
    assert host.file(f"{DATA_DIR}/appendonlydir").is_directory


def test_start_log_has_no_warning_the_role_controls(host):
    """Restart and read the log of this start: only kernel warnings the container cannot fix remain."""
    host.run("systemctl restart redis-server")
    assert cli(host, ADMIN, "PING") == "PONG"
    warnings = [line for line in last_start_lines(host) if re.search(r" # .*warning", line, re.I)]
    allowed = []
    if host.file("/proc/sys/vm/overcommit_memory").content_string.strip() != "1":
        # Host-wide and read-only inside a container; os_tuning persists 1 for real hosts.
        allowed.append("Memory overcommit must be enabled")
    unexpected = [w for w in warnings if not any(a in w for a in allowed)]
    assert unexpected == [], unexpected
    text = "\n".join(last_start_lines(host))
    assert "TCP backlog" not in text
    assert "Could not create server TCP listening socket" not in text


def test_kill_9_and_restart_keeps_the_keys(host):
    pairs = [word for i in range(100) for word in (f"app:durable:{i}", str(i))]
    assert cli(host, APP, "MSET", *pairs) == "OK"
    time.sleep(2)  # appendfsync everysec: at most one second of writes is at risk
    pid = host.check_output("systemctl show -p MainPID --value redis-server")
    host.run_expect([0], f"kill -9 {pid}")
    # Debian's unit restarts it (Restart=always); wait for the new process to answer.
    for _attempt in range(50):
        new_pid = host.check_output("systemctl show -p MainPID --value redis-server")
        if new_pid not in ("0", pid) and cli(host, ADMIN, "PING") == "PONG":
            break
        time.sleep(0.2)
    else:
        pytest.fail("redis-server did not come back after kill -9")
    assert cli(host, APP, "GET", "app:durable:99") == "99"
    assert all(cli(host, APP, "GET", f"app:durable:{i}") == str(i) for i in range(0, 100, 7))


def test_backup_unit_and_timer(host):
    timer = host.service("apes-redis-backup.timer")
    assert timer.is_enabled
    assert timer.is_running
    exposure = host.check_output("systemd-analyze security apes-redis-backup.service | tail -1")
    level = float(re.search(r"level for \S+: ([0-9.]+)", exposure).group(1))
    assert level < 2.0, exposure
    unit = host.file("/etc/systemd/system/apes-redis-backup.service").content_string
    assert "secret" not in unit


def test_backups_are_checked_checksummed_and_rotated(host):
    host.run(f"rm -f {BACKUP_DIR}/dump-*")
    for _run in range(3):
        host.run_expect([0], "systemctl start apes-redis-backup.service")
    dumps = sorted(host.check_output(f"ls {BACKUP_DIR} | grep -E '^dump-.*\\.rdb$'").split())
    assert len(dumps) == 2, dumps  # redis_backup_keep in vars/redis.yml
    sums = host.check_output(f"ls {BACKUP_DIR} | grep -E '\\.sha256$'").split()
    assert sorted(sums) == [d + ".sha256" for d in dumps]
    host.run_expect([0], f"cd {BACKUP_DIR} && sha256sum --check --strict {dumps[-1]}.sha256")
    host.run_expect([0], f"redis-check-rdb {BACKUP_DIR}/{dumps[-1]}")
    assert host.file(f"{BACKUP_DIR}/{dumps[-1]}").mode == 0o640
    # The password never appears in the process list: redis-cli gets it from the environment.
    journal = host.check_output("journalctl -u apes-redis-backup.service -o cat -n 30")
    assert "secret" not in journal


def test_failed_backup_fails_the_unit(host):
    env = "/etc/redis/backup.env"
    saved = host.file(env).content_string
    before = host.check_output(f"ls {BACKUP_DIR}")
    try:
        host.run_expect([0], f"echo 'REDISCLI_AUTH=\"wrong-password-000\"' > {env}")
        result = host.run("systemctl start apes-redis-backup.service")
        assert result.rc != 0
        show = host.check_output("systemctl show -p Result apes-redis-backup.service")
        assert show == "Result=exit-code"
        assert host.check_output(f"ls {BACKUP_DIR}") == before, "a failed backup must leave nothing behind"
    finally:
        host.run(f"printf %s {shlex.quote(saved)} > {env}; systemctl reset-failed apes-redis-backup.service")
    host.run_expect([0], "systemctl start apes-redis-backup.service")


def test_backup_drill_restores_10000_keys(host, run_playbook):
    name = host.backend.get_hostname()
    cli(host, ADMIN, "FLUSHALL", check=True)
    host.run_expect([0], "seq 1 10000 | sed 's/.*/SET drill:& v&/' > /root/drill.txt")
    loaded = host.run(
        f"REDISCLI_AUTH={ADMIN[1]} redis-cli {connection(host)} --user admin --pipe < /root/drill.txt"
    ).stdout
    assert "errors: 0, replies: 10000" in loaded
    assert dbsize(host) == 10000
    host.run_expect([0], "systemctl start apes-redis-backup.service")
    cli(host, ADMIN, "FLUSHALL", check=True)
    assert dbsize(host) == 0
    asides_before = host.run(f"ls -d {DATA_DIR}/before-restore-*").stdout.split()

    # The restore reads the TLS settings from the inventory (host_vars), as converge does.
    result = run_playbook(RESTORE, extra_vars={"redis_admin_password": ADMIN[1]}, limit=name)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert re.search(rf"Restored {BACKUP_DIR}/dump-\S+\.rdb\s+on\s+{name}:\s+10000\s+keys", out), out[-3000:]

    assert dbsize(host) == 10000
    assert cli(host, ADMIN, "GET", "drill:4242") == "v4242"
    # The data that was there (the flushed state) was moved aside, not deleted.
    asides = host.run(f"ls -d {DATA_DIR}/before-restore-*").stdout.split()
    assert len(asides) == len(asides_before) + 1
    new_aside = sorted(set(asides) - set(asides_before))[0]
    assert host.file(f"{new_aside}/dump.rdb").exists
    assert host.file(f"{new_aside}/appendonlydir").is_directory
    # AOF is on again, written afresh from the restored data, and the file says so.
    assert cli(host, ADMIN, "CONFIG", "GET", "appendonly").split()[-1] == "yes"
    assert host.file(f"{DATA_DIR}/appendonlydir").is_directory
    assert host.file("/etc/redis/redis-runtime.conf").contains("^appendonly yes$")
    # Survives a restart: the new AOF holds the restored keys.
    host.run_expect([0], "systemctl restart redis-server")
    assert dbsize(host) == 10000


def test_bad_input_fails_before_any_change(host, run_playbook):
    """Each bad input stops the role, naming what is wrong, with nothing changed; a bad ACL never
    reaches the running server. One host per run, so that each host's tests stay on one worker."""
    name = host.backend.get_hostname()
    before = host.file("/etc/redis/users.acl").content_string
    cases = [
        ({"redis_admin_password": ""}, ["redis_admin_password"]),
        ({"redis_maxmemory": "lots"}, ["redis_maxmemory"]),
        ({"redis_users": [{"name": "app", "password": "short"}]}, ["redis_users", "entry 0 (app)"]),
        ({"redis_port": "not-a-port"}, ["redis_port"]),
        # TLS: a certificate without its key, a key without its certificate, an unknown mode.
        ({"redis_tls_enabled": True, "redis_tls_cert_src": "/etc/hostname"}, ["redis_tls_key_src is required"]),
        ({"redis_tls_enabled": True, "redis_tls_key_src": "/etc/hostname"}, ["redis_tls_cert_src is required"]),
        ({"redis_tls_enabled": True, "redis_tls_auth_clients": "maybe"}, ["redis_tls_auth_clients"]),
        # A supplied key that is not the certificate's (the development CA's key with a host's certificate).
        (
            {
                "redis_tls_enabled": True,
                "redis_tls_cert_src": str(dev_tls_dir() / f"{TLS_HOST}.crt"),
                "redis_tls_key_src": str(dev_tls_dir() / "ca.key"),
                "redis_tls_ca_src": str(dev_tls_dir() / "ca.crt"),
            },
            ["is not the key of redis_tls_cert_src"],
        ),
        (
            {"redis_users": [{"name": "app", "password": "molecule-app-secret-1", "commands": "+nosuchcommand"}]},
            ["Unknown command or category name in ACL", "+nosuchcommand"],
        ),
    ]
    for extra, expected in cases:
        result = run_playbook(SCENARIO / "redis.yml", extra_vars=extra, limit=name)
        out = result.stdout + result.stderr
        assert result.returncode != 0, f"{extra} was accepted"
        for text in expected:
            assert text in out, f"{text!r} not in output for {extra}: {out[-3000:]}"
        assert "molecule-app-secret-1" not in out, "a password was printed"
        assert "PRIVATE KEY" not in out, "a key was printed"
        recaps = re.findall(rf"^{name}\s+: .*$", out, re.M)
        assert len(recaps) == 1, out[-2000:]
        assert re.search(r"changed=0\s", recaps[0]), recaps
    assert host.file("/etc/redis/users.acl").content_string == before
    # The running server still has the good ACL: app works, nothing else was loaded.
    assert cli(host, APP, "SET", "app:after-bad-input", "1") == "OK"
    assert "nosuchcommand" not in cli(host, ADMIN, "ACL", "LIST")
