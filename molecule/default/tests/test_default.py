"""The full stack, end to end: site.yml on the local environment's topology.

Only what the full stack can show: flows across roles and hosts (telemetry from every host to the
gateway, backups of the primary in the repository host, real faults on the database, backup and
cache hosts that reach Alertmanager on obs1 as alerts through the gateway and Prometheus, an
in-place restore that re-clones the replica). What one role proves on its own is proven by that
role's scenario (Redis failover and Sentinel: redis_sentinel; PITR and repository faults: pgbackrest;
replication: postgresql_replication).
Tests run in file order: the restore drill changes the cluster, so it comes last but one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import testinfra

PROJECT = Path(__file__).resolve().parents[3]
SITE = PROJECT / "playbooks" / "site.yml"
RESTORE = PROJECT / "playbooks" / "postgresql_restore.yml"
NAMES = ["db1", "db2", "backup1", "cache1", "cache2", "obs1"]
BACKEND = "/var/lib/otelcol/backend.jsonl"
MASTER_NAME = "apes"


def instance(name: str) -> str:
    return f"apes-default-{name}"


def secrets_dir() -> Path:
    # group_vars/all/local_env.yml: <inventory directory>/.secrets
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory" / ".secrets"


def secret(name: str) -> str:
    return (secrets_dir() / name).read_text().split()[0]


@pytest.fixture(scope="module")
def hosts():
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {n: testinfra.get_host(f"ansible://{instance(n)}?ansible_inventory={inventory}") for n in NAMES}


def psql(host, sql: str, db: str = "app", **variables: str) -> str:
    """SQL through psql's stdin; values go in as psql variables (:'name'), not into the text."""
    options = " ".join(f"-v {name}={shlex.quote(value)}" for name, value in variables.items())
    cmd = host.run("echo %s | runuser -u postgres -- psql -v ON_ERROR_STOP=1 -d %s " + options + " -Atq -f -", sql, db)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def address(host) -> str:
    return host.check_output("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1")


def redis(host, user: str, password_file: str, *args: str, port: int = 6379, target: str = "127.0.0.1") -> str:
    words = " ".join(shlex.quote(a) for a in args)
    login = f"--user {user} " if user else ""
    result = host.run(
        f"REDISCLI_AUTH={shlex.quote(secret(password_file))} redis-cli {login}-h {target} -p {port} {words}"
    )
    return (result.stdout + result.stderr).strip()


def sentinel_master(host) -> str:
    return redis(host, "", "redis_sentinel", "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME, port=26379)


# Prometheus and Alertmanager on obs1 (group monitoring), asked from inside that host.
PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
_GET = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


def http_json(host, url: str):
    return json.loads(host.check_output(f"python3 -c {shlex.quote(_GET)} {shlex.quote(url)}"))


def promql(host, query: str) -> list[dict]:
    answer = http_json(host, f"{PROMETHEUS}/api/v1/query?query={quote(query)}")
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def firing(gateway, name: str, **labels: str) -> list[dict]:
    """Alertmanager's alerts of that name and labels that it holds as firing (state active: not
    resolved, silenced or inhibited)."""
    return [
        alert
        for alert in http_json(gateway, f"{ALERTMANAGER}/api/v2/alerts?active=true&silenced=false&inhibited=false")
        if alert["labels"].get("alertname") == name
        and all(alert["labels"].get(k) == v for k, v in labels.items())
        and alert["status"]["state"] == "active"
    ]


# --- converge as developers get it ----------------------------------------------------------------


def test_generated_secrets_are_private():
    files = [p for p in secrets_dir().rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"postgresql_app", "redis_app", "pgbackrest_cipher_pass", "redis_admin"} <= names
    for path in files:
        if path.suffix in {".crt", ".csr"}:
            continue  # certificates and signing requests are public
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is mode {oct(mode)}"


def test_row_written_on_primary_is_read_on_replica(hosts, wait_for):
    token = secrets.token_hex(8)
    psql(hosts["db1"], "CREATE TABLE IF NOT EXISTS app.replicated (token text PRIMARY KEY)")
    psql(hosts["db1"], "INSERT INTO app.replicated VALUES (:'token')", token=token)
    assert wait_for(
        lambda: psql(hosts["db2"], "SELECT count(*) FROM app.replicated WHERE token = :'token'", token=token) == "1",
        timeout=30,
        what="the row on the replica",
    )
    assert psql(hosts["db2"], "SELECT pg_is_in_recovery()") == "t"


WHO_AM_I = "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def test_application_user_over_tls_with_verify_full(hosts):
    """From the replica's host to the primary over the network, as the README tells developers."""
    db1 = address(hosts["db1"])
    ca = hosts["db2"].check_output("ls /etc/postgresql/*/main/tls/ca.crt")
    result = hosts["db2"].run(
        f"PGPASSWORD={shlex.quote(secret('postgresql_app'))} psql -Atq "
        f"'host={db1} dbname=app user=app sslmode=verify-full sslrootcert={ca}' -c {shlex.quote(WHO_AM_I)}"
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "app|t"


def test_redis_application_user(hosts):
    master_ip, _port = sentinel_master(hosts["obs1"]).split()
    master = next(n for n in ("cache1", "cache2") if address(hosts[n]) == master_ip)
    assert redis(hosts[master], "app", "redis_app", "SET", "app:greeting", "hello") == "OK"
    assert redis(hosts[master], "app", "redis_app", "GET", "app:greeting") == "hello"
    assert "NOPERM" in redis(hosts[master], "app", "redis_app", "FLUSHALL")
    assert "NOPERM" in redis(hosts[master], "app", "redis_app", "SET", "other:key", "x")
    assert "NOAUTH" in hosts[master].run("redis-cli -h 127.0.0.1 PING").stdout


def test_backup_exists_in_the_repository(ansible_module, seconds_since_created):
    # The backup was taken during this run: younger than the repository host's container.
    max_age = seconds_since_created(instance("backup1"))
    result = ansible_module(instance("backup1"), "apes.infra.pgbackrest_info", {"stanza": "main", "max_age": max_age})
    assert not result.get("failed"), result
    main = result["stanzas"]["main"]
    assert main["ok"]
    assert main["newest"]["full"]["type"] == "full"


def _telemetry_hosts(gateway) -> set[str]:
    text = gateway.run(f"cat {BACKEND}").stdout
    return set(re.findall(r'"key":"host\.name","value":\{"stringValue":"([^"]+)"', text))


def test_telemetry_from_every_host_reaches_the_gateway(hosts, wait_for):
    """Each collector stamps host.name (its inventory name) on what it sends; the gateway's own
    telemetry counts too."""
    expected = {instance(n) for n in NAMES}
    seen = wait_for(
        lambda: (found := _telemetry_hosts(hosts["obs1"])) >= expected and found,
        timeout=120,
        step=5,
        what="telemetry from every host in the gateway's backend file",
    )
    assert seen >= expected


def _attributes(entries: list) -> dict[str, str]:
    return {e["key"]: next(iter(e["value"].values()), "") for e in entries or []}


def _backup_reports(gateway) -> tuple[list[tuple], list[tuple]]:
    """The backup roles' reports in the gateway's backend file: gauge points (host, name, attributes,
    value) and log records (host, body)."""
    text = gateway.run(f"grep -E 'apes_(unit_failed|backup_)|apes-unit-failed|apes-backup-age' {BACKEND}").stdout
    points, logs = [], []
    for line in text.splitlines():
        record = json.loads(line)
        for resource in record.get("resourceMetrics", []):
            host = _attributes(resource["resource"].get("attributes")).get("host.name")
            for scope in resource.get("scopeMetrics", []):
                for metric in scope.get("metrics", []):
                    for point in metric.get("gauge", {}).get("dataPoints", []):
                        value = float(point.get("asDouble", point.get("asInt", "nan")))
                        points.append((host, metric["name"], _attributes(point.get("attributes")), value))
        for resource in record.get("resourceLogs", []):
            host = _attributes(resource["resource"].get("attributes")).get("host.name")
            for scope in resource.get("scopeLogs", []):
                logs += [(host, entry["body"].get("stringValue", "")) for entry in scope.get("logRecords", [])]
    return points, logs


def _runtime_dropin(host, unit: str, line: str) -> str:
    """A fault for one unit, in /run (gone at reboot); returns the drop-in directory."""
    directory = f"/run/systemd/system/{unit}.d"
    host.run_expect(
        [0],
        f"mkdir -p {shlex.quote(directory)} && printf '[Service]\\n%s\\n' {shlex.quote(line)} "
        f"> {shlex.quote(directory)}/apes-test.conf && systemctl daemon-reload",
    )
    return directory


# (host, backup unit, a fault that makes it fail for real, the freshness check's unit, its attributes)
BACKUPS = {
    "pgbackrest": (
        "backup1",
        "pgbackrest-backup-main@full.service",
        "Environment=PGBACKREST_REPO1_PATH=/nonexistent",
        "pgbackrest-backup-age-main.service",
        {"backup": "pgbackrest", "stanza": "main"},
    ),
    "redis": (
        "cache1",
        "apes-redis-backup.service",
        "Environment=REDIS_PORT=1",
        "apes-redis-backup-age.service",
        {"backup": "redis"},
    ),
}


@pytest.mark.parametrize("backup", sorted(BACKUPS))
def test_failed_and_stale_backups_are_reported_at_the_gateway(hosts, wait_for, backup):
    """OnFailure= of a backup unit that really fails, and the freshness check of a backup older than
    its maximum age, both arrive at the gateway as gauges and error records of the host. Only what
    arrives after each step counts: the hourly check may have reported before the test."""
    name, unit, fault, age_unit, attributes = BACKUPS[backup]
    host, gateway, origin = hosts[name], hosts["obs1"], instance(name)
    report = f"apes-unit-failed@{unit}.service"
    labels = {"host_name": origin, "backup": attributes["backup"]}

    def fresh_points():
        return [p[3] for p in _backup_reports(gateway)[0] if p[:3] == (origin, "apes_backup_fresh", attributes)]

    if backup == "redis":  # the role takes no backup of its own at deployment; the timer's first is at night
        host.run_expect([0], f"systemctl start {unit}")
    seen = len(fresh_points())
    host.run_expect([0], f"systemctl start {age_unit}")
    fresh = wait_for(
        lambda: fresh_points()[seen:],
        timeout=90,
        step=5,
        what=f"a new apes_backup_fresh of {backup} at the gateway",
    )
    assert set(fresh) == {1.0}, fresh
    directories = []
    try:
        points, logs = _backup_reports(gateway)
        before = len(points), len(logs)
        directories.append(_runtime_dropin(host, unit, fault))
        assert host.run(f"systemctl start {unit}").rc != 0
        assert host.check_output(f"systemctl show -p Result --value {unit}") == "exit-code"
        directories.append(_runtime_dropin(host, age_unit, "Environment=BACKUP_MAX_AGE=1"))
        time.sleep(2)
        assert host.run(f"systemctl start {age_unit}").rc != 0

        def reported():
            points, logs = _backup_reports(gateway)
            points, logs = points[before[0] :], logs[before[1] :]
            failed = [p for p in points if p[:3] == (origin, "apes_unit_failed", {"unit": unit}) and p[3] == 1.0]
            stale = [p for p in points if p[:3] == (origin, "apes_backup_fresh", attributes) and p[3] == 0.0]
            failure_log = [b for h, b in logs if h == origin and b.startswith(f"{unit} failed (result exit-code")]
            stale_log = [b for h, b in logs if h == origin and "older than the maximum age of 1 s" in b]
            return failed and stale and failure_log and stale_log and (failure_log, stale_log)

        found = wait_for(reported, timeout=120, step=5, what=f"the {backup} failure and staleness")
        failure_log, stale_log = found
        assert re.fullmatch(
            rf"{re.escape(unit)} failed \(result exit-code, exit exited [1-9][0-9]*, invocation [0-9a-f]{{32}}\)",
            failure_log[-1],
        ), failure_log
        assert stale_log[-1].startswith(f"{backup}")
        # ... and at Alertmanager, through Prometheus's rules.
        wait_for(
            lambda: (
                firing(gateway, "BackupTooOld", **labels)
                and firing(gateway, "BackupUnitFailed", host_name=origin, unit=unit)
            ),
            timeout=120,
            step=5,
            what=f"BackupTooOld and BackupUnitFailed of {backup} at Alertmanager",
        )
    finally:
        host.run(
            f"rm -rf {' '.join(directories)}; systemctl daemon-reload; systemctl reset-failed {unit} {age_unit} "
            f"{shlex.quote(report)} 'apes-unit-failed@{age_unit}.service'"
        )
    host.run_expect([0], f"systemctl start {age_unit}")
    # A fresh check resolves BackupTooOld; the failed unit's alert stays for its window (a success
    # sends no report).
    assert firing(gateway, "BackupUnitFailed", host_name=origin, unit=unit)
    wait_for(
        lambda: not firing(gateway, "BackupTooOld", **labels),
        timeout=120,
        step=5,
        what=f"BackupTooOld of {backup} resolved at Alertmanager after a fresh check",
    )


def test_prometheus_scrapes_every_host_through_the_gateway(hosts):
    gateway = hosts["obs1"]
    targets = http_json(gateway, f"{PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
    health = {t["labels"]["job"]: t["health"] for t in targets}
    assert health == {"otel_gateway": "up", "otelcol": "up", "prometheus": "up", "alertmanager": "up"}, targets
    reporting = {r["metric"]["host_name"] for r in promql(gateway, "count by (host_name) (system_memory_usage_bytes)")}
    assert reporting == {instance(n) for n in NAMES}
    # Every rule of the collection evaluates without error against the real series.
    groups = http_json(gateway, f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    assert {g["name"] for g in groups} >= {
        "apes.backups",
        "apes.postgresql",
        "apes.redis",
        "apes.hosts",
        "apes.collector",
    }
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not broken, broken


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"prometheus_alertmanager_route": {"receiver": "nobody"}}, "must be in prometheus_alertmanager_receivers"),
        (
            {"prometheus_alertmanager_route": {"receiver": "default", "routes": [{"receiver": "pager"}]}},
            "(default, pager) must be in prometheus_alertmanager_receivers",
        ),
        ({"prometheus_alert_disk_usage_ratio": "high"}, "prometheus_alert_disk_usage_ratio"),
        ({"prometheus_retention_time": "0d"}, "prometheus_retention_time must be a duration above 0"),
        ({"prometheus_alert_disk_usage_ratio": 85}, "prometheus_alert_disk_usage_ratio out of range"),
        (
            {"prometheus_evaluation_interval": "30 seconds"},
            "prometheus_evaluation_interval: not a Prometheus duration",
        ),
        ({"prometheus_web_plaintext_accepted": False}, "prometheus_web_listen_address (0.0.0.0:9090)"),
    ],
    ids=[
        "unknown-receiver",
        "unknown-sub-route-receiver",
        "threshold-type",
        "retention-0",
        "ratio-out-of-range",
        "interval-not-a-duration",
        "exposed-port",
    ],
)
def test_bad_monitoring_input_fails_before_any_change(hosts, run_playbook, extra, expected):
    gateway = hosts["obs1"]
    state = "md5sum /etc/prometheus/*.yml /etc/prometheus/rules/* /etc/default/prometheus*"
    before = gateway.check_output(state)
    result = run_playbook(SITE, extra_vars=extra, tags="prometheus", limit=instance("obs1"))
    out = result.stdout + result.stderr
    assert result.returncode != 0, f"{extra} was accepted"
    assert expected in " ".join(out.split()), out[-3000:]  # the YAML callback wraps long messages
    assert re.search(rf"{instance('obs1')}\s*:.*changed=0\s", out), "nothing may change"
    assert gateway.check_output(state) == before


def test_stopped_replica_fires_the_replication_alert_until_it_is_back(hosts, wait_for):
    """The primary's slot for the replica goes inactive: PostgreSQLReplicaNotStreaming fires for the
    primary at Alertmanager (not inhibited: the primary is up), and resolves once the replica streams."""
    db2, gateway, primary = hosts["db2"], hosts["obs1"], instance("db1")
    unit = db2.check_output("systemctl list-units --plain --no-legend --type=service 'postgresql@*' | awk '{print $1}'")
    assert not firing(gateway, "PostgreSQLReplicaNotStreaming", host_name=primary)
    start = time.monotonic()
    db2.run_expect([0], f"systemctl stop {shlex.quote(unit)}")
    try:
        wait_for(
            lambda: firing(gateway, "PostgreSQLReplicaNotStreaming", host_name=primary),
            timeout=300,
            step=5,
            what="PostgreSQLReplicaNotStreaming at Alertmanager",
        )
        print(f"replica stopped -> alert firing at Alertmanager: {time.monotonic() - start:.0f} s")
    finally:
        db2.run_expect([0], f"systemctl start {shlex.quote(unit)}")
    wait_for(
        lambda: not firing(gateway, "PostgreSQLReplicaNotStreaming", host_name=primary),
        timeout=300,
        step=5,
        what="PostgreSQLReplicaNotStreaming resolved",
    )


def test_redis_failover_fires_at_alertmanager(hosts, wait_for):
    """Stop the Redis master: Sentinel promotes the other server, and RedisMasterChanged fires for it."""
    gateway = hosts["obs1"]
    master_ip, _port = sentinel_master(gateway).split()
    old = next(n for n in ("cache1", "cache2") if address(hosts[n]) == master_ip)
    new = next(n for n in ("cache1", "cache2") if n != old)
    assert not firing(gateway, "RedisMasterChanged", host_name=instance(new))
    start = time.monotonic()
    hosts[old].run_expect([0], "systemctl stop redis-server.service")
    try:
        wait_for(
            lambda: firing(gateway, "RedisMasterChanged", host_name=instance(new)),
            timeout=300,
            step=5,
            what=f"RedisMasterChanged for {new} at Alertmanager",
        )
        print(f"Redis master stopped -> alert firing at Alertmanager: {time.monotonic() - start:.0f} s")
    finally:
        hosts[old].run_expect([0], "systemctl start redis-server.service")
    assert sentinel_master(gateway).split()[0] == address(hosts[new])


def test_alerts_page_lists_the_firing_alert_in_a_real_browser(hosts, tmp_path):
    """Headless Chromium (Debian's, on this machine) opens Prometheus's alerts page on obs1's
    address, as an operator would; the screenshot is kept as a test artifact."""
    gateway = hosts["obs1"]
    unit = BACKUPS["pgbackrest"][1]
    assert firing(gateway, "BackupUnitFailed", unit=unit)  # from the backup test: firing for 6 h
    # Debian builds Prometheus without the React UI: its alerts page is the classic one.
    url = f"http://{address(gateway)}:9090/classic/alerts"
    artifacts = Path(os.environ.get("APES_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "prometheus-alerts.png"
    browser = [
        "chromium",
        "--headless=new",
        "--no-sandbox",  # as root in CI; the page is our own
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1800",
        "--virtual-time-budget=15000",
    ]
    dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = subprocess.run(
        [*browser, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120, check=False
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    print(f"screenshot of {url}: {screenshot}")
    # The page as the browser rendered it: the alert's row in the firing colour, with its count, and
    # its instance with the unit's label. Inactive rules are listed too, so the name alone says nothing.
    firing_row = r'<tr class="alert alert-danger alert_header">\s*<td>[^<]*<i[^>]*></i>\s*<b>BackupUnitFailed</b>'
    row = re.search(firing_row + r" \((\d+) active\)", dom.stdout)
    assert row, dom.stdout[-3000:]
    assert int(row.group(1)) >= 1
    assert f'unit="{unit}"' in dom.stdout.replace("&#34;", '"').replace("&quot;", '"'), dom.stdout[-3000:]
    assert screenshot.stat().st_size > 10_000


# --- changes: the restore drill ---------------------------------------------------------------


def test_in_place_restore_drill_brings_the_data_back_and_recloned_replica_follows(
    hosts, run_playbook, wait_for, restored_backup_set
):
    db1, db2 = hosts["db1"], hosts["db2"]
    psql(db1, "DROP TABLE IF EXISTS app.drill")
    psql(db1, "CREATE TABLE app.drill AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 5000) g")
    before = psql(db1, "SELECT md5(string_agg(id || note, ',' ORDER BY id)) FROM app.drill")
    point = f"before_drop_{secrets.token_hex(4)}"
    psql(db1, "SELECT pg_create_restore_point(:'point')", point=point)
    psql(db1, "DROP TABLE app.drill")  # the accident
    # pgbackrest check switches WAL and waits until it is in the repository.
    check = db1.run("runuser -u postgres -- pgbackrest --stanza=main check")
    assert check.rc == 0, check.stdout + check.stderr

    # The set pgBackRest must choose: the newest backup, taken before the restore point.
    info = json.loads(
        hosts["backup1"].check_output("runuser -u pgbackrest -- pgbackrest --stanza=main --output=json info")
    )
    expected_set = info[0]["backup"][-1]["label"]
    result = run_playbook(
        RESTORE,
        extra_vars={
            "postgresql_restore_type": "name",
            "postgresql_restore_target": point,
            "postgresql_restore_mode": "in_place",
            "postgresql_restore_confirm_in_place": True,
        },
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert restored_backup_set(result.stdout) == expected_set

    assert psql(db1, "SELECT md5(string_agg(id || note, ',' ORDER BY id)) FROM app.drill") == before
    assert psql(db1, "SELECT pg_is_in_recovery()") == "f"
    # The replica was re-cloned from the restored primary: it has the table and follows new writes.
    assert psql(db2, "SELECT pg_is_in_recovery()") == "t"
    assert psql(db2, "SELECT md5(string_agg(id || note, ',' ORDER BY id)) FROM app.drill") == before
    token = secrets.token_hex(8)
    psql(db1, "INSERT INTO app.drill VALUES (0, :'token')", token=token)
    assert wait_for(
        lambda: psql(db2, "SELECT count(*) FROM app.drill WHERE note = :'token'", token=token) == "1",
        timeout=30,
        what="replication after the re-clone",
    )
    # The replica's old data directory was kept aside, not deleted.
    assert db2.run("ls -d /var/lib/postgresql/*/main.before-reclone-*").rc == 0
    # Backups continue on the new timeline.
    check = db1.run("runuser -u postgres -- pgbackrest --stanza=main check")
    assert check.rc == 0, check.stdout + check.stderr


def test_json_lines_in_the_backend_are_valid(hosts):
    lines = [line for line in hosts["obs1"].file(BACKEND).content_string.splitlines() if line.strip()]
    assert lines
    for line in lines[:50]:
        json.loads(line)
