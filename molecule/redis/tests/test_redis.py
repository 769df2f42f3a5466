"""Behaviour of the redis role on Debian 12 (Redis 7.0) and Debian 13 (Redis 8.0)."""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest
import testinfra
import yaml
from cryptography import x509

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
# debian13 serves TLS only on 6380 (molecule.yml host_vars), with a certificate from the site PKI
# (apes.infra.pki, its CA on the controller); debian12 serves plaintext on 6379.
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


def pki_dir() -> Path:
    """The controller directory of the site PKI (pki_dir: <inventory dir>/.secrets/pki)."""
    return Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent / ".secrets" / "pki"


def pki_cert(name: str = TLS_HOST) -> Path:
    return pki_dir() / "certs" / f"{name}-redis.crt"


def pki_key(name: str = TLS_HOST) -> Path:
    return pki_dir() / "private" / f"{name}-redis.key"


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


def test_tls_with_the_site_ca_authenticates_and_works(tls_host):
    """A client that verifies the server against the site CA logs in and works; the CA and keys
    stay in a private directory on the controller."""
    pki = pki_dir()
    for directory in (pki, pki / "private"):
        assert oct(directory.stat().st_mode & 0o777) == "0o700", directory
    for key in (pki / "ca.key", pki_key()):
        assert oct(key.stat().st_mode & 0o777) == "0o600", key
    assert tls_host.file(CA).content_string == (pki / "ca.crt").read_text()
    assert tls_host.file(f"{TLS_DIR}/server.crt").content_string == pki_cert().read_text()
    assert not tls_host.file(f"{TLS_DIR}/ca.key").exists, "the CA key must never leave the controller"
    # serverAuth and clientAuth: the host's certificate is also its client certificate.
    usage = tls_host.check_output(f"openssl x509 -in {TLS_DIR}/server.crt -noout -ext extendedKeyUsage")
    assert "TLS Web Server Authentication" in usage, usage
    assert "TLS Web Client Authentication" in usage, usage

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


def test_tls_certificate_close_to_its_end_is_renewed_and_loaded_without_restart(
    tls_host, run_playbook, monkeypatch, reissue_with_days_left
):
    """A certificate with one day left is renewed by the next run (limited to the tag redis_tls, the
    operator's rotation), and the running server serves the new one without a restart (CONFIG SET
    of the same files); clients still connect verifying the server, and no key appears in the output."""

    def served() -> tuple[str, str]:
        text = tls_host.check_output(
            f"openssl s_client -connect 127.0.0.1:{TLS_PORT} -CAfile {CA} -verify_return_error -verify_ip 127.0.0.1"
            " </dev/null 2>/dev/null | openssl x509 -noout -serial -enddate"
        )
        fields = dict(line.split("=", 1) for line in text.splitlines())
        # openssl pads the serial's hex to whole bytes (a leading 0); the others do not.
        return format(int(fields["serial"], 16), "X"), fields["notAfter"]

    def days_left(not_after: str) -> float:
        end = datetime.datetime.strptime(not_after, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.UTC)
        return (end - datetime.datetime.now(datetime.UTC)).total_seconds() / 86400

    # A certificate with one day left, installed by a run that does not renew (pki_renew_days 0).
    short_serial = reissue_with_days_left(pki_cert(), pki_key(), pki_dir() / "ca.crt", pki_dir() / "ca.key", 1)
    monkeypatch.setenv("ANSIBLE_RUN_TAGS", "redis_tls")  # ansible-playbook --tags redis_tls
    result = run_playbook(SCENARIO / "redis.yml", extra_vars={"pki_renew_days": 0}, limit=TLS_HOST)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    serial, not_after = served()
    assert serial == short_serial, (serial, short_serial)
    assert days_left(not_after) < 1.1, not_after
    pid = tls_host.check_output("systemctl show -p MainPID --value redis-server")

    # The next run (the PKI's default pki_renew_days, 30) renews it.
    result = run_playbook(SCENARIO / "redis.yml", limit=TLS_HOST)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "PRIVATE KEY" not in out, "a key was printed"
    assert "Check the TLS settings" in out, "the variables are checked in a TLS-only run too"
    assert "RUNNING HANDLER [apes.infra.redis : Reload redis-server]" in out
    assert "RUNNING HANDLER [apes.infra.redis : Restart redis-server]" not in out
    serial, not_after = served()
    assert serial != short_serial
    assert serial == _serial_of(pki_cert()), "the server serves the renewed certificate"
    assert days_left(not_after) > 300, not_after
    assert tls_host.check_output("systemctl show -p MainPID --value redis-server") == pid, "restarted"
    assert cli(tls_host, ADMIN, "PING") == "PONG"
    assert cli(tls_host, APP, "SET", "app:after-renewal", "1") == "OK"


def _serial_of(cert_path: Path) -> str:
    return format(x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number, "X")


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


def _report_of_failure(host, unit: str) -> str:
    """The journal of the OnFailure= report of `unit` (this scenario has no collector: it says so)."""
    report = f"apes-unit-failed@{unit}.service"
    for _attempt in range(30):
        journal = host.run(f"journalctl -u {shlex.quote(report)} -o cat --no-pager").stdout
        # One line per request that found no collector: the gauge, then the error log record.
        if "/v1/metrics" in journal and "/v1/logs" in journal and "not sent" in journal:
            return journal
        time.sleep(1)
    pytest.fail(f"{report} did not run: {journal}")


def test_failed_backup_fails_the_unit_and_is_reported(host):
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
        # OnFailure= ran the report, which tried to send the gauge and the error to the collector.
        _report_of_failure(host, "apes-redis-backup.service")
    finally:
        host.run(
            f"printf %s {shlex.quote(saved)} > {env}; systemctl reset-failed apes-redis-backup.service "
            "'apes-unit-failed@apes-redis-backup.service.service'"
        )
    host.run_expect([0], "systemctl start apes-redis-backup.service")


def test_backup_freshness_check_fails_on_a_stale_backup(host):
    timer = host.service("apes-redis-backup-age.timer")
    assert timer.is_enabled
    assert timer.is_running
    for unit in ("apes-redis-backup-age.service", "apes-unit-failed@x.service"):
        exposure = host.check_output(f"systemd-analyze security --no-pager {unit} | tail -1")
        level = float(re.search(r"level for \S+: ([0-9.]+)", exposure).group(1))
        print(f"systemd-analyze security {unit}: {exposure}")
        assert level < 2.0, exposure
    age_unit = "apes-redis-backup-age.service"
    host.run_expect([0], "systemctl start apes-redis-backup.service")
    # Fresh: the unit succeeds, although no collector takes the report here (exit 75 is success).
    host.run_expect([0], f"systemctl start {age_unit}")
    assert "within the maximum age of 93600 s" in host.check_output(f"journalctl -u {age_unit} -o cat -n 40")
    dropin = "/run/systemd/system/apes-redis-backup-age.service.d"
    try:
        host.run_expect(
            [0], f"mkdir -p {dropin} && printf '[Service]\\nEnvironment=BACKUP_MAX_AGE=60\\n' > {dropin}/test.conf"
        )
        host.run_expect([0], f"systemctl daemon-reload && touch -d '-2 hours' {BACKUP_DIR}/dump-*.rdb")
        assert host.run(f"systemctl start {age_unit}").rc != 0
        assert host.check_output(f"systemctl show -p Result {age_unit}") == "Result=exit-code"
        journal = host.check_output(f"journalctl -u {age_unit} -o cat -n 40")
        assert re.search(r"redis: newest backup is 7[0-9]{3} s old, older than the maximum age of 60 s", journal), (
            journal
        )
        _report_of_failure(host, age_unit)
    finally:
        host.run(
            f"rm -rf {dropin}; systemctl daemon-reload; "
            f"systemctl reset-failed {age_unit} 'apes-unit-failed@{age_unit}.service'"
        )
    host.run_expect([0], "systemctl start apes-redis-backup.service")
    host.run_expect([0], f"systemctl start {age_unit}")


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
    since = host.check_output("date +%s")

    # The restore reads the TLS settings from the inventory (host_vars), as converge does.
    confirmed = {"redis_admin_password": ADMIN[1], "redis_restore_confirm": True}
    result = run_playbook(RESTORE, extra_vars=confirmed, limit=name)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # The backup timer (its unit wants redis-server) was stopped before the server and started
    # again after it; it runs again.
    jobs = unit_jobs(host, since)
    assert (TIMER, "stop") in jobs, jobs
    assert (TIMER, "start") in jobs, jobs
    assert jobs.index((TIMER, "stop")) < jobs.index((SERVICE, "stop")), jobs
    last_start = {unit: max(i for i, job in enumerate(jobs) if job == (unit, "start")) for unit in (TIMER, SERVICE)}
    assert last_start[TIMER] > last_start[SERVICE], jobs
    assert host.service(TIMER).is_running
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


TIMER = "apes-redis-backup.timer"
SERVICE = "redis-server.service"


def unit_jobs(host, since: str) -> list[tuple[str, str]]:
    """(unit, job type) of the start and stop jobs systemd completed for the backup timer and the
    server since the epoch second `since`, in order (systemd's own journal entries)."""
    lines = host.check_output(f"journalctl _PID=1 -o json --since @{since} --no-pager").splitlines()
    jobs = []
    for line in lines:
        entry = json.loads(line)
        if entry.get("UNIT") in (TIMER, SERVICE) and entry.get("JOB_RESULT") == "done":
            jobs.append((entry["UNIT"], entry.get("JOB_TYPE")))
    return jobs


def test_restore_without_confirmation_changes_nothing(host, run_playbook):
    """A plain run of the restore playbook stops in its first play, naming the variable: the
    server was not stopped, its data and the backup timer are as they were."""
    name = host.backend.get_hostname()
    assert cli(host, APP, "SET", "app:unconfirmed", "still-here") == "OK"
    pid = main_pid(host)
    asides = host.run(f"ls -d {DATA_DIR}/before-restore-*").stdout.split()
    for extra in ({}, {"redis_restore_confirm": False}):
        result = run_playbook(RESTORE, extra_vars={"redis_admin_password": ADMIN[1], **extra}, limit=name)
        out = result.stdout + result.stderr
        assert result.returncode != 0, out[-3000:]
        assert "set redis_restore_confirm=true to confirm" in " ".join(out.split()), out[-3000:]
        assert "Stop redis-sentinel" not in out, out[-3000:]
        assert "Stop redis-server" not in out, out[-3000:]
        assert re.search(r"changed=0\s", recap(out, name)), recap(out, name)
    assert main_pid(host) == pid, "the server was restarted"
    assert cli(host, APP, "GET", "app:unconfirmed") == "still-here"
    assert host.run(f"ls -d {DATA_DIR}/before-restore-*").stdout.split() == asides
    assert host.service(TIMER).is_running


def test_failed_restore_puts_the_data_back_and_starts_everything(host, run_playbook):
    """A backup that is damaged after the server stopped (a drop-in of this test truncates it when
    the server stops): redis-server cannot load it. The rescue moves what the restore wrote aside,
    puts the data from before back, writes appendonly yes again, starts the server and the backup
    timer, and the run fails saying where the data is."""
    name = host.backend.get_hostname()
    work = "/root/failing-restore"
    dropin = "/etc/systemd/system/redis-server.service.d/zz-test-damage-backup.conf"
    flag = "/run/apes-test-damage-backup"
    host.run_expect([0], "systemctl start apes-redis-backup.service")
    newest = host.check_output(f"ls {BACKUP_DIR} | grep -E '^dump-.*\\.rdb$' | sort | tail -1")
    # Written after the backup: only the live data has it.
    assert cli(host, APP, "SET", "app:after-the-backup", "live") == "OK"
    keys = dbsize(host)
    asides = host.run(f"ls -d {DATA_DIR}/before-restore-*").stdout.split()
    host.run_expect(
        [0],
        f"set -e; rm -rf {work}; mkdir -m 700 {work}; cp {BACKUP_DIR}/{newest} {work}/dump-damaged.rdb; "
        f"cd {work}; sha256sum dump-damaged.rdb > dump-damaged.rdb.sha256",
    )
    host.run_expect(
        [0],
        f"printf '%s\\n' '[Service]' "
        f"\"ExecStopPost=+/bin/sh -c 'if [ -e {flag} ]; then rm -f {flag}; "
        f"truncate -s 64 {work}/dump-damaged.rdb; fi'\" > {dropin} && systemctl daemon-reload && touch {flag}",
    )
    try:
        result = run_playbook(
            RESTORE,
            extra_vars={
                "redis_admin_password": ADMIN[1],
                "redis_restore_confirm": True,
                "redis_restore_backup": f"{work}/dump-damaged.rdb",
            },
            limit=name,
        )
    finally:
        host.run_expect([0], f"rm -f {dropin} {flag} && systemctl daemon-reload")
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, out[-3000:]
    assert not host.file(flag).exists, "the backup was not damaged after the stop: the test proves nothing"
    assert f"The restore of {work}/dump-damaged.rdb on {name} failed at Start redis-server" in out, out[-3000:]
    assert f"The data from before the restore is back in {DATA_DIR} and redis-server runs with it" in out, out[-3000:]
    failed = re.search(rf"({DATA_DIR}/failed-restore-[0-9TZ]+)", out)
    assert failed, out[-3000:]
    assert "secret-1" not in out, "a password was printed"

    # The data from before, not the backup's, with AOF on as configured; the server and the timer run.
    assert cli(host, ADMIN, "PING") == "PONG"
    assert host.service("redis-server").is_running
    assert cli(host, APP, "GET", "app:after-the-backup") == "live"
    assert dbsize(host) == keys
    assert config_get(host, "appendonly") == "yes"
    assert host.file("/etc/redis/redis-runtime.conf").contains("^appendonly yes$")
    assert host.file(f"{DATA_DIR}/appendonlydir").is_directory
    assert host.service(TIMER).is_running
    # What the failed restore wrote was moved aside, not deleted; the data went back where it was.
    assert host.file(f"{failed.group(1)}/dump.rdb").size == 64
    assert host.run(f"ls -d {DATA_DIR}/before-restore-*").stdout.split() == asides
    host.run_expect([0], f"rm -rf {work}")


def test_backup_script_refuses_to_keep_no_backup(host):
    """REDIS_BACKUP_KEEP=0 would remove every backup, the new one included: the script refuses it
    before it takes or removes anything (run as the unit runs it, with the unit's environment)."""
    host.run_expect([0], "systemctl start apes-redis-backup.service")
    before = host.check_output(f"ls {BACKUP_DIR}")
    assert ".rdb" in before
    env = host.check_output("systemctl show -p Environment --value apes-redis-backup.service")
    assert "REDIS_BACKUP_KEEP=2" in env, env
    for keep in ("0", "-1", "none"):
        result = host.run(
            f"set -a; . /etc/redis/backup.env; set +a; "
            f"env {env} REDIS_BACKUP_KEEP={keep} /usr/local/lib/apes-infra/redis-backup"
        )
        assert result.rc == 2, (keep, result.rc, result.stdout, result.stderr)
        assert f"REDIS_BACKUP_KEEP must be a whole number of at least 1 (backups kept), not '{keep}'" in result.stderr
        assert host.check_output(f"ls {BACKUP_DIR}") == before, f"REDIS_BACKUP_KEEP={keep} changed the backups"


def recap(out: str, name: str) -> str:
    """The PLAY RECAP line of one host (exactly one expected)."""
    lines = re.findall(rf"^{name}\s+: .*$", out, re.M)
    assert len(lines) == 1, out[-2000:]
    return lines[0]


def main_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value redis-server")


def test_role_twice_in_one_run_reloads_after_an_earlier_restart(host, run_playbook):
    """The first pass restarts the server (redis.conf changed); the second pass's new ACL user must
    still be loaded: a restart earlier in the run does not stand in for a later reload."""
    name = host.backend.get_hostname()
    second = ("second", "molecule-second-secret-1")
    result = run_playbook(SCENARIO / "twice.yml", limit=name)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "RUNNING HANDLER [apes.infra.redis : Restart redis-server]" in out, "the first pass did not restart"
    assert config_get(host, "hz") == "11"
    assert cli(host, second, "PING") == "PONG", "the second pass's user was not loaded"
    assert cli(host, second, "SET", "second:x", "1") == "OK"

    # Back to the scenario's settings: the user is gone, hz is the default again.
    result = run_playbook(SCENARIO / "redis.yml", limit=name)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "WRONGPASS" in cli(host, second, "PING")
    assert config_get(host, "hz") == "10"


def _json_run(run_playbook, monkeypatch, playbook: Path, limit: str, **kwargs) -> tuple[int, dict]:
    """Run a playbook with the json stdout callback; return its exit status and parsed output."""
    monkeypatch.setenv("ANSIBLE_LOAD_CALLBACK_PLUGINS", "1")
    monkeypatch.setenv("ANSIBLE_STDOUT_CALLBACK", "ansible.builtin.json")
    result = run_playbook(playbook, limit=limit, **kwargs)
    try:
        return result.returncode, json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"no JSON (rc {result.returncode}): {result.stdout[-2000:]} {result.stderr[-2000:]}"
        ) from exc


def test_another_roles_tag_alone_still_gets_the_published_facts(host, run_playbook, monkeypatch):
    """site.yml --tags otel_collector: the redis play runs only its `always` tasks, which publish
    redis_facts (and the facts of earlier releases) for the reader's play, and change nothing."""
    name = host.backend.get_hostname()
    monkeypatch.setenv("ANSIBLE_RUN_TAGS", "otel_collector")
    rc, run = _json_run(run_playbook, monkeypatch, SCENARIO / "consumer.yml", name)
    assert rc == 0, json.dumps(run)[-3000:]
    assert run["stats"][name]["changed"] == 0, run["stats"]
    reader = run["plays"][1]["tasks"][0]["hosts"][name]
    assert not reader.get("failed"), reader
    seen = reader["msg"]
    facts = seen["redis_facts"]
    tls = is_tls(host)
    assert seen["redis_monitoring_user"] == "monitoring"
    assert seen["redis_tls_enabled"] is tls
    assert (seen["redis_port"], seen["redis_tls_port"], seen["redis_log_file"]) == (6379, TLS_PORT, LOG)
    expected = {
        "server": True,
        "sentinel": False,
        "port": 0 if tls else 6379,
        "tls_port": TLS_PORT if tls else 0,
        "client_host": "127.0.0.1",
        "client_port": TLS_PORT if tls else 6379,
        "bind": ["127.0.0.1"],
        "announce_host": "127.0.0.1",
        "log_file": LOG,
        "monitoring": {"enabled": True, "user": "monitoring"},
        "role": "master",
        "master": f"127.0.0.1:{TLS_PORT if tls else 6379}",
        "sentinel_managed": False,
        "backup": {"enabled": True, "dir": BACKUP_DIR},
    }
    assert {key: facts.get(key) for key in expected} == expected
    assert facts["tls"] == (
        {
            "enabled": True,
            "only": True,
            "auth_clients": "optional",
            "client_cert": False,
            "protocols": ["TLSv1.2", "TLSv1.3"],
            "ca_file": CA,
            "cert_file": f"{TLS_DIR}/server.crt",
            "key_file": f"{TLS_DIR}/server.key",
        }
        if tls
        else {
            "enabled": False,
            "only": False,
            "auth_clients": "no",
            "client_cert": False,
            "protocols": [],
            "ca_file": None,
            "cert_file": None,
            "key_file": None,
        }
    )
    assert "secret" not in json.dumps(facts), "a secret was published"


def _scenario_users() -> list[dict]:
    return yaml.safe_load((SCENARIO / "vars" / "redis.yml").read_text())["redis_users"]


def test_each_tag_alone_applies_its_change(host, run_playbook, monkeypatch):
    """Each of the role's tags, run alone after a change of a setting it covers, writes the change
    and reloads or restarts the server as the change needs; the server runs with it afterwards.
    A full run then puts every setting back."""
    name = host.backend.get_hostname()
    tagged = ("tagged", "molecule-tagged-secret-1")

    def timer_calendar() -> str:
        return host.check_output("systemctl show -p TimersCalendar --value apes-redis-backup.timer")

    cases = [
        # (tag, extra vars, prepare, check, restart expected)
        ("redis", {"redis_maxclients": 10001}, None, lambda: config_get(host, "maxclients") == "10001", False),
        ("redis_config", {"redis_timeout": 7}, None, lambda: config_get(host, "timeout") == "7", False),
        ("redis_server", {"redis_config_extra": {"hz": 12}}, None, lambda: config_get(host, "hz") == "12", True),
        (
            "redis_acl",
            {"redis_users": [*_scenario_users(), {"name": tagged[0], "password": tagged[1]}]},
            None,
            lambda: cli(host, tagged, "PING") == "PONG",
            False,
        ),
        (
            "redis_backup",
            {"redis_backup_on_calendar": "*-*-* 04:20:00"},
            None,
            lambda: "04:20:00" in timer_calendar(),
            False,
        ),
        (
            "redis_install",
            {},
            "apt-get remove -y -qq python3-redis",
            lambda: host.run("python3 -c 'import redis'").rc == 0,
            False,
        ),
    ]
    if is_tls(host):
        cases.append(
            (
                "redis_tls",
                {"redis_tls_protocols": ["TLSv1.3"]},
                None,
                lambda: config_get(host, "tls-protocols") == "TLSv1.3",
                True,
            )
        )
    for tag, extra, prepare, check, restart in cases:
        if prepare:
            host.run_expect([0], prepare)
        assert not check(), f"{tag}: the change is there before the run"
        pid = main_pid(host)
        monkeypatch.setenv("ANSIBLE_RUN_TAGS", tag)
        result = run_playbook(SCENARIO / "redis.yml", extra_vars=extra, limit=name)
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"--tags {tag}: {out[-3000:]}"
        assert not re.search(r"changed=0\s", recap(out, name)), f"--tags {tag} changed nothing"
        assert check(), f"--tags {tag} {extra}: the server does not run with the change"
        assert (main_pid(host) != pid) is restart, f"--tags {tag}: restart {'expected' if restart else 'unexpected'}"
        assert "secret-1" not in out, "a password was printed"

    monkeypatch.delenv("ANSIBLE_RUN_TAGS")
    result = run_playbook(SCENARIO / "redis.yml", limit=name)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (config_get(host, "maxclients"), config_get(host, "timeout"), config_get(host, "hz")) == ("10000", "0", "10")
    assert "WRONGPASS" in cli(host, tagged, "PING")
    assert "03:15:00" in timer_calendar()
    if is_tls(host):
        assert config_get(host, "tls-protocols") == "TLSv1.2 TLSv1.3"


def test_check_mode_predicts_and_changes_nothing(host, run_playbook, monkeypatch):
    """--check --diff: no change on a converged host; with a new setting the change is predicted
    (and shown for the files that hold no secret), and nothing on the host changes."""
    name = host.backend.get_hostname()
    monkeypatch.setenv("ANSIBLE_DIFF_ALWAYS", "1")
    result = run_playbook(SCENARIO / "redis.yml", limit=name, check=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert re.search(r"changed=0\s", recap(out, name)), recap(out, name)

    runtime = host.file("/etc/redis/redis-runtime.conf").content_string
    conf = host.file("/etc/redis/redis.conf").content_string
    result = run_playbook(
        SCENARIO / "redis.yml",
        extra_vars={"redis_maxclients": 10002, "redis_config_extra": {"hz": 13}},
        limit=name,
        check=True,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert not re.search(r"changed=0\s", recap(out, name)), recap(out, name)
    assert "+hz 13" in out, "no diff of redis.conf"
    assert (
        host.file("/etc/redis/redis-runtime.conf").content_string,
        host.file("/etc/redis/redis.conf").content_string,
    ) == (
        runtime,
        conf,
    )
    assert (config_get(host, "maxclients"), config_get(host, "hz")) == ("10000", "10")
    assert "secret-1" not in out, "a password was printed"


def test_bad_input_fails_before_any_change(host, run_playbook):
    """Each bad input stops the role, naming what is wrong, with nothing changed; a bad ACL never
    reaches the running server. One host per run, so that each host's tests stay on one worker."""
    name = host.backend.get_hostname()
    before = host.file("/etc/redis/users.acl").content_string
    conf = host.file("/etc/redis/redis.conf").content_string
    address = host_address(host)
    cases = [
        ({"redis_admin_password": ""}, ["redis_admin_password"]),
        ({"redis_maxmemory": "lots"}, ["redis_maxmemory"]),
        ({"redis_users": [{"name": "app", "password": "short"}]}, ["redis_users", "entry 0 (app)"]),
        ({"redis_port": "not-a-port"}, ["redis_port"]),
        # Ranges: ports, backup retention.
        ({"redis_port": 70000}, ["Ports must be between 1 and 65535, not redis_port 70000"]),
        ({"redis_tls_port": 0}, ["Ports must be between 1 and 65535, not redis_tls_port 0"]),
        ({"redis_backup_keep": 0}, ["redis_backup_keep must be at least 1"]),
        (
            {"redis_backup_on_calendar": "every full moon"},
            ["redis_backup_on_calendar 'every full moon' is not a systemd calendar expression"],
        ),
        # Secrets: the placeholder of inventories/example, one that contains it, one of 15 characters.
        ({"redis_admin_password": "CHANGE-ME"}, ["Missing, too short or a placeholder: redis_admin_password"]),
        (
            {"redis_monitoring_password": "CHANGE-ME-in-the-vault-1"},
            ["Missing, too short or a placeholder: redis_monitoring_password (the CHANGE-ME placeholder)"],
        ),
        ({"redis_backup_password": "only-15-chars-1"}, ["Missing, too short or a placeholder: redis_backup_password"]),
        (
            {"redis_users": [{"name": "app", "password": "CHANGE-ME-in-the-vault-1", "keys": ["app:*"]}]},
            ["redis_users: invalid entry 0 (app)"],
        ),
        # Plaintext on an address that is not loopback (TLS beside plaintext is plaintext too).
        (
            {"redis_bind": ["127.0.0.1", address], **({"redis_tls_only": False} if is_tls(host) else {})},
            [
                f"redis_bind {address}: plaintext Redis on an address that is not loopback",
                "redis_plaintext_accepted: true",
            ],
        ),
        # TLS: a certificate without its key, a key without its certificate, an unknown mode.
        ({"redis_tls_enabled": True, "redis_tls_cert_src": "/etc/hostname"}, ["redis_tls_key_src is required"]),
        ({"redis_tls_enabled": True, "redis_tls_key_src": "/etc/hostname"}, ["redis_tls_cert_src is required"]),
        ({"redis_tls_enabled": True, "redis_tls_auth_clients": "maybe"}, ["redis_tls_auth_clients"]),
        # A supplied key that is not the certificate's (the site CA's key with a host's certificate).
        (
            {
                "redis_tls_enabled": True,
                "redis_tls_cert_src": str(pki_cert()),
                "redis_tls_key_src": str(pki_dir() / "ca.key"),
                "redis_tls_ca_src": str(pki_dir() / "ca.crt"),
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
        flat = " ".join(out.split())  # messages may be wrapped
        for text in expected:
            assert text in flat, f"{text!r} not in output for {extra}: {out[-3000:]}"
        assert "molecule-app-secret-1" not in out, "a password was printed"
        for secret in ("CHANGE-ME-in-the-vault-1", "only-15-chars-1"):
            assert secret not in out, "a password was printed"
        assert "PRIVATE KEY" not in out, "a key was printed"
        recaps = re.findall(rf"^{name}\s+: .*$", out, re.M)
        assert len(recaps) == 1, out[-2000:]
        assert re.search(r"changed=0\s", recaps[0]), recaps
    assert host.file("/etc/redis/users.acl").content_string == before
    assert host.file("/etc/redis/redis.conf").content_string == conf
    # The running server still has the good ACL: app works, nothing else was loaded.
    assert cli(host, APP, "SET", "app:after-bad-input", "1") == "OK"
    assert "nosuchcommand" not in cli(host, ADMIN, "ACL", "LIST")


def host_address(host) -> str:
    """The container's own address on the Docker network (not loopback)."""
    return host.check_output("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1")


@pytest.fixture(scope="module", params=["apes-redis-debian12"])
def plain_host(request):
    """The plaintext instance (its name in the test id, so that its tests stay on its worker)."""
    return testinfra.get_host(f"ansible://{request.param}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def test_plaintext_on_the_network_runs_when_accepted(plain_host, run_playbook):
    """The same plaintext bind that the bad-input test sees refused passes the checks when the
    inventory accepts it (a check-mode run: it predicts the new bind and changes nothing)."""
    name = plain_host.backend.get_hostname()
    conf = plain_host.file("/etc/redis/redis.conf").content_string
    address = host_address(plain_host)
    result = run_playbook(
        SCENARIO / "redis.yml",
        extra_vars={"redis_bind": ["127.0.0.1", address], "redis_plaintext_accepted": True},
        limit=name,
        check=True,
        diff=True,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "plaintext Redis on an address that is not loopback" not in out
    assert f"+bind 127.0.0.1 {address}" in out, "the new bind was not predicted"
    assert plain_host.file("/etc/redis/redis.conf").content_string == conf
    assert "secret-1" not in out, "a password was printed"
