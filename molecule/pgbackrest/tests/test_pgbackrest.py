"""pgBackRest end to end: an encrypted off-host repository over TLS, scheduled backups, point in
time recovery that brings back exactly the rows committed before the target, and the faults an
operator meets: PostgreSQL killed during a backup, the repository host down for a while."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

testinfra_hosts = ["apes-pgbackrest-db"]

PROJECT = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
RESTORE = PROJECT / "playbooks" / "postgresql_restore.yml"
REPO = "apes-pgbackrest-repo"
MARKER = "apes-plaintext-marker-7f3e9a"


def psql(host, sql, port=5432, **variables):
    """Run SQL through psql's stdin; values go in as psql variables (:name, :'name'), not into the text."""
    options = " ".join(f"-v {name}={value}" for name, value in variables.items())
    cmd = host.run(
        "echo %s | runuser -u postgres -- psql -v ON_ERROR_STOP=1 -p %s " + options + " -Atq -f -", sql, str(port)
    )
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def repo(*argv, check=True):
    proc = subprocess.run(
        ["docker", "exec", REPO, *argv], capture_output=True, text=True, errors="replace", check=False
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def backup(kind):
    """Run a backup the way the timer does: through the systemd unit."""
    return repo("systemctl", "start", f"pgbackrest-backup-main@{kind}.service", check=False)


def last_archived(host):
    return psql(host, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")


@pytest.fixture
def wait_archived(wait_for):
    """wait_archived(host): switch WAL and wait until the archiver has pushed it (async push included)."""

    def wait(host):
        segment = psql(host, "SELECT pg_walfile_name(pg_switch_wal())")
        wait_for(lambda: last_archived(host) >= segment, timeout=60, step=0.5, what=f"WAL segment {segment} archived")
        return segment

    return wait


def restore(run_playbook, **extra):
    result = run_playbook(RESTORE, extra_vars=extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def table(host):
    psql(host, "DROP TABLE IF EXISTS drill")
    psql(
        host,
        "CREATE TABLE drill (id int PRIMARY KEY, batch text, note text,"
        " committed_at timestamptz DEFAULT clock_timestamp())",
    )
    return "drill"


def test_postgresql_started_once(host):
    """Archiving is on from PostgreSQL's first start: adding backups reloads, never restarts."""
    log = host.check_output("pg_lsclusters -h | awk '{print $7; exit}'")
    starts = host.check_output(f"grep -c 'database system is ready to accept connections' {log}")
    assert starts == "1"


def test_services_and_timers(host):
    assert host.service("pgbackrest-server").is_running
    for kind in ("full", "diff", "incr"):
        timer = repo("systemctl", "is-enabled", f"pgbackrest-backup-main-{kind}.timer")
        assert timer.stdout.strip() == "enabled"
        active = repo("systemctl", "is-active", f"pgbackrest-backup-main-{kind}.timer")
        assert active.stdout.strip() == "active"


def test_archiving_and_check(host):
    assert psql(host, "SHOW archive_mode") == "on"
    assert "archive-push" in psql(host, "SHOW archive_command")
    repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "check")


def test_tls_refuses_a_client_certificate_from_another_ca(host):
    """The database host reaches the repository with its own certificate; a certificate that our
    CA did not sign, with the same name, is refused by the repository's TLS server."""
    own = host.run("runuser -u postgres -- pgbackrest --stanza=main repo-ls")
    assert own.rc == 0, own.stderr
    assert own.stdout.split() == ["archive", "backup"]
    host.run_expect(
        [0],
        "cd /tmp && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -nodes -days 1 "
        "-subj /CN=apes-pgbackrest-db -keyout rogue.key -out rogue.crt 2>/dev/null"
        " && chown postgres rogue.key rogue.crt",
    )
    rogue = host.run(
        "runuser -u postgres -- pgbackrest --stanza=main --repo1-host-cert-file=/tmp/rogue.crt "
        "--repo1-host-key-file=/tmp/rogue.key --io-timeout=5 repo-ls"
    )
    host.run("rm -f /tmp/rogue.key /tmp/rogue.crt")
    # pgBackRest's exit code for a TLS failure is 101 (ServiceError); the server names the reason.
    assert rogue.rc == 101, rogue.stdout + rogue.stderr
    assert "tlsv1 alert unknown ca" in rogue.stderr
    assert rogue.stdout == ""


def test_point_in_time_recovery(host, table, run_playbook, wait_archived):
    psql(
        host,
        "INSERT INTO drill (id, batch, note) SELECT g, 'before-full', :'marker' FROM generate_series(1, 100) g",
        marker=MARKER,
    )
    assert backup("full").returncode == 0
    # Second batch: one transaction per row, a second apart, recording commit times.
    for i in range(101, 106):
        psql(host, "INSERT INTO drill (id, batch) VALUES (:i, 'after-full')", i=i)
        time.sleep(1)
    rows = psql(host, "SELECT id, committed_at FROM drill WHERE batch = 'after-full' ORDER BY id").splitlines()
    # Target: halfway between the 3rd and the 4th commit of the second batch.
    third = psql(host, "SELECT committed_at + interval '500 milliseconds' FROM drill WHERE id = 103")
    assert len(rows) == 5
    assert backup("incr").returncode == 0
    psql(host, "INSERT INTO drill (id, batch) SELECT g, 'after-incr' FROM generate_series(106, 120) g")
    wait_archived(host)

    restore(run_playbook, postgresql_restore_type="time", postgresql_restore_target=third, postgresql_restore_port=5499)
    restored = psql(host, "SELECT batch, count(*), max(id) FROM drill GROUP BY batch ORDER BY batch", port=5499)
    # Exactly the rows committed before the target: all 100 of the first batch, 3 of the second.
    assert restored.splitlines() == ["after-full|3|103", "before-full|100|100"]
    stop_restored_copy(host, 5499)


def stop_restored_copy(host, port):
    datadir = psql(host, "SHOW data_directory", port=port)
    version = host.check_output("pg_lsclusters -h | awk '{print $1; exit}'")
    host.run_expect(
        [0], f"runuser -u postgres -- /usr/lib/postgresql/{version}/bin/pg_ctl -D {datadir} -m fast -w stop"
    )


def test_restore_latest_matches_the_source(host, table, run_playbook, wait_archived, restored_backup_set):
    checksum_sql = "SELECT md5(string_agg(id || ':' || batch || ':' || coalesce(note, ''), ',' ORDER BY id)) FROM drill"
    source = psql(host, checksum_sql)
    wait_archived(host)
    newest = json.loads(
        repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "--output=json", "info").stdout
    )[0]["backup"][-1]["label"]
    out = restore(run_playbook, postgresql_restore_port=5498)
    # latest: the newest backup set, then all archived WAL.
    assert restored_backup_set(out) == newest
    assert psql(host, checksum_sql, port=5498) == source
    stop_restored_copy(host, 5498)


def test_repository_is_not_plaintext(host, table):
    psql(host, "CHECKPOINT")
    # The marker is in the live data files (so the search below means something) ...
    live = host.run(f"grep -rl {MARKER} /var/lib/postgresql")
    assert live.rc == 0
    # ... but nowhere in the repository: backups and WAL are encrypted.
    proc = repo("grep", "-rl", MARKER, "/var/lib/pgbackrest", check=False)
    assert proc.returncode == 1, proc.stdout
    info = repo("cat", "/var/lib/pgbackrest/backup/main/backup.info").stdout
    assert "[backup:current]" not in info, "backup.info must be encrypted too"


def test_pgbackrest_info_module(host, ansible_module, seconds_since_created):
    # Every backup in the repository was taken during this run: younger than the repository host.
    max_age = seconds_since_created(REPO)
    result = ansible_module(REPO, "apes.infra.pgbackrest_info", {"stanza": "main", "max_age": max_age})
    assert not result.get("failed"), result
    main = result["stanzas"]["main"]
    assert main["ok"]
    assert main["newest"]["full"]["type"] == "full"
    assert main["newest"]["incr"] is not None
    assert main["archive"]["max"] >= main["archive"]["min"]


def test_kill_during_backup_then_next_backup_and_check_pass(host, table, wait_for):
    """kill -9 of PostgreSQL while a backup runs: the backup's unit fails, the next one succeeds.

    The backup is held inside pg_backup_start() (no fast checkpoint, so it waits for the next
    scheduled one) so that the kill lands during the backup every time, whatever the machine's speed.
    """
    repo("systemctl", "set-environment", "PGBACKREST_START_FAST=n")
    try:
        repo("systemctl", "start", "--no-block", "pgbackrest-backup-main@full.service")
        wait_for(
            lambda: (
                psql(
                    host,
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%pg_backup_start%' AND state = 'active'",
                )
                != "0"
            ),
            timeout=60,
            step=0.5,
            what="the backup to reach pg_backup_start",
        )
        pgdata = psql(host, "SHOW data_directory")
        host.run_expect([0], f"kill -9 $(head -n 1 {pgdata}/postmaster.pid)")
        state = wait_for(
            lambda: (
                now
                if (
                    now := repo(
                        "systemctl", "is-active", "pgbackrest-backup-main@full.service", check=False
                    ).stdout.strip()
                )
                in ("failed", "inactive")
                else None
            ),
            timeout=60,
            step=0.5,
            what="the interrupted backup unit to stop",
        )
        assert state == "failed", "a backup interrupted by the database crash must fail its unit"
    finally:
        repo("systemctl", "unset-environment", "PGBACKREST_START_FAST")
    version = host.check_output("pg_lsclusters -h | awk '{print $1; exit}'")
    host.run_expect([0], f"systemctl restart postgresql@{version}-main")
    wait_for(
        lambda: host.run("runuser -u postgres -- psql -Atqc 'select 1'").rc == 0,
        timeout=60,
        what="PostgreSQL to answer after the restart",
    )
    repo("systemctl", "reset-failed", "pgbackrest-backup-main@full.service")
    assert backup("full").returncode == 0
    repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "check")


def test_repository_down_then_archiving_catches_up(host, table, wait_for):
    before = json.loads(
        repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "--output=json", "info").stdout
    )
    subprocess.run(["docker", "stop", REPO], check=True, capture_output=True)
    try:
        switched = []
        for i in range(5):
            psql(host, "INSERT INTO drill (id, batch) VALUES (:i, 'repo-down')", i=300000 + i)
            switched.append(psql(host, "SELECT pg_walfile_name(pg_switch_wal())"))
        # PostgreSQL keeps serving writes, and keeps the WAL it could not archive.
        time.sleep(3)
        last = psql(host, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        assert last < switched[-1], "nothing can be archived while the repository is down"
        pgdata = psql(host, "SHOW data_directory")
        for segment in switched:
            if segment > last:
                assert host.file(f"{pgdata}/pg_wal/{segment}").exists, f"{segment} must stay until archived"
    finally:
        subprocess.run(["docker", "start", REPO], check=True, capture_output=True)
    wait_for(
        lambda: repo("systemctl", "is-active", "pgbackrest-server.service", check=False).stdout.strip() == "active",
        timeout=120,
        what="the repository's pgbackrest-server to run again",
    )
    wait_for(
        lambda: last_archived(host) >= switched[-1],
        timeout=240,
        what=f"archiving to catch up to {switched[-1]} once the repository is back",
    )
    # No segment lost: pgBackRest's verify walks the archive for gaps and bad checksums.
    verify = repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "verify")
    assert "ERROR" not in verify.stdout + verify.stderr
    after = json.loads(
        repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "--output=json", "info").stdout
    )
    assert after[0]["archive"][-1]["max"] >= switched[-1] > before[0]["archive"][-1]["max"]
    repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "check")


def converge(run_playbook, **kwargs) -> str:
    result = run_playbook(SCENARIO / "converge.yml", **kwargs)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    return out


def recap_changed(out: str) -> dict:
    return dict(re.findall(r"^(apes-pgbackrest-\S+)\s*:.*changed=(\d+)", out, re.M))


def server_invocation(host) -> str:
    return host.check_output("systemctl show -p InvocationID --value pgbackrest-server.service")


def host_certificate_end(host) -> datetime:
    end = host.check_output("openssl x509 -in /etc/pgbackrest/tls/host.crt -noout -enddate").split("=", 1)[1]
    return datetime.strptime(end.strip(), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def test_check_mode_on_a_converged_site_predicts_no_change(run_playbook):
    result = run_playbook(SCENARIO / "converge.yml", check=True, diff=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert recap_changed(out) == {"apes-pgbackrest-db": "0", "apes-pgbackrest-repo": "0"}, out[-4000:]
    assert "repo1-cipher-pass" not in out, "the passphrase never shows in a diff"


def test_rerun_costs_a_handful_of_module_runs(run_counted):
    """pgBackRest's part of an idempotent re-run: one probe per host, and the repository host's passphrase file
    (a secret that is never probed). Counted by benchmarks/callbacks/apes_counts.py."""
    result, counts = run_counted(SCENARIO / "converge.yml")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert set(recap_changed(out).values()) == {"0"}
    assert counts["remote"]["pgbackrest"] <= 3, counts
    assert counts["remote"]["postgresql"] <= 2, counts


def test_pgbackrest_tag_alone_reloads_postgresql_with_new_archive_settings(host, run_playbook):
    """pgBackRest's archive settings live in PostgreSQL's drop-in: `--tags pgbackrest` writes it, and PostgreSQL
    reloads (archive_timeout needs no restart)."""
    started = psql(host, "SELECT pg_postmaster_start_time()")
    converge(run_playbook, tags="pgbackrest", extra_vars={"pgbackrest_archive_timeout": 45})
    assert psql(host, "SHOW archive_timeout") == "45s"
    assert psql(host, "SELECT pg_postmaster_start_time()") == started
    dropins = host.check_output("ls /etc/postgresql/15/main/conf.d/").split()
    assert dropins == ["50-apes-infra.conf"], "one drop-in carries the archive settings"
    converge(run_playbook)
    assert psql(host, "SHOW archive_timeout") == "1min"
    assert psql(host, "SELECT pg_postmaster_start_time()") == started


def test_configure_tag_alone_restarts_the_tls_servers(host, run_playbook):
    before = server_invocation(host)
    repo_before = repo("systemctl", "show", "-p", "InvocationID", "--value", "pgbackrest-server.service").stdout
    converge(run_playbook, tags="pgbackrest_configure", extra_vars={"pgbackrest_process_max": 3})
    assert "process-max=3" in host.file("/etc/pgbackrest/pgbackrest.conf").content_string
    assert server_invocation(host) != before
    assert repo("systemctl", "show", "-p", "InvocationID", "--value", "pgbackrest-server.service").stdout != repo_before
    assert host.service("pgbackrest-server").is_running
    converge(run_playbook)
    assert "process-max=2" in host.file("/etc/pgbackrest/pgbackrest.conf").content_string
    repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "check")


def test_schedule_tag_alone_reschedules_the_timers(run_playbook):
    def calendar():
        return repo("systemctl", "show", "-p", "TimersCalendar", "--value", "pgbackrest-backup-main-full.timer").stdout

    assert "01:00:00" in calendar()
    schedules = {"full": "Sun *-*-* 02:00:00", "diff": "Mon..Sat *-*-* 01:00:00", "incr": "*-*-* *:30:00"}
    converge(run_playbook, tags="pgbackrest_schedule", extra_vars={"pgbackrest_schedules": schedules})
    assert "02:00:00" in calendar()
    assert repo("systemctl", "is-active", "pgbackrest-backup-main-full.timer").stdout.strip() == "active"
    converge(run_playbook)
    assert "01:00:00" in calendar()


def test_certificate_close_to_expiry_is_renewed_and_the_server_restarted(
    host, run_playbook, controller_copy, reissue_with_days_left
):
    """The database host's pgBackRest certificate with one day left (signed again by the site CA) is installed,
    then renewed by the next `--tags pgbackrest_tls` run, the TLS server restarted through its handler, and WAL
    archiving keeps working (pgbackrest check)."""
    files = controller_copy(host.file("/etc/pgbackrest/tls/host.crt").content_string)
    reissue_with_days_left(*files, days=1)
    converge(run_playbook, extra_vars={"pki_renew_days": 0})
    assert host_certificate_end(host) < datetime.now(UTC) + timedelta(days=2)
    repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "check")
    before = server_invocation(host)

    converge(run_playbook, tags="pgbackrest_tls")
    assert host_certificate_end(host) > datetime.now(UTC) + timedelta(days=300)
    assert server_invocation(host) != before, "the TLS server runs with the new certificate"
    repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "check")
    own = host.run("runuser -u postgres -- pgbackrest --stanza=main repo-ls")
    assert own.rc == 0, own.stderr


def test_a_second_cluster_that_sorts_first_is_not_taken_for_the_managed_one(host, run_playbook, restored_backup_set):
    """pg_createcluster 15 aaa: pg_lsclusters now lists it first. pgBackRest's configuration and the restore
    playbook still use the cluster apes.infra.postgresql manages (15/main)."""
    host.run_expect([0], "pg_createcluster 15 aaa >/dev/null")
    try:
        assert host.check_output("pg_lsclusters -h").splitlines()[0].split()[:2] == ["15", "aaa"]
        converge(run_playbook)
        assert "pg1-path=/var/lib/postgresql/15/main\n" in host.file("/etc/pgbackrest/pgbackrest.conf").content_string
        repo_conf = repo("cat", "/etc/pgbackrest/pgbackrest.conf").stdout
        assert "pg1-path=/var/lib/postgresql/15/main\n" in repo_conf
        out = restore(run_playbook, postgresql_restore_port=5497)
        restored_backup_set(out)
        assert "Restored copy: /var/lib/postgresql/15/main.restore-" in out
        assert psql(host, "SELECT count(*) > 0 FROM drill", port=5497) == "t"
        datadir = psql(host, "SHOW data_directory", port=5497)
        host.run_expect(
            [0], f"runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D {datadir} -m fast -w stop >/dev/null"
        )
    finally:
        host.run("pg_dropcluster 15 aaa")


# --- In-place restores: checks before the stop, unarchived commits, the rescue -----------------

IN_PLACE = {"postgresql_restore_mode": "in_place", "postgresql_restore_confirm_in_place": True}
TIMERS = [f"pgbackrest-backup-main-{kind}.timer" for kind in ("full", "diff", "incr")]


def postmaster(host) -> str:
    """The running postmaster's PID and start time: changes whenever PostgreSQL is stopped or restarted."""
    started = psql(host, "SELECT pg_postmaster_start_time()")
    return started + " " + host.check_output("head -n 1 /var/lib/postgresql/15/main/postmaster.pid")


def timer_starts() -> dict:
    """When each backup timer last became active (monotonic clock): changes when a timer is stopped and started."""
    return {
        timer: repo("systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "--value", timer).stdout.strip()
        for timer in TIMERS
    }


def timers_active() -> list:
    return [repo("systemctl", "is-active", timer, check=False).stdout.strip() for timer in TIMERS]


def aside_dirs(host, kind) -> list:
    found = host.run(f"ls -d /var/lib/postgresql/15/main.{kind}-* 2>/dev/null")
    return found.stdout.split()


def refused(run_playbook, expected, **extra) -> str:
    result = run_playbook(RESTORE, extra_vars=extra)
    out = result.stdout + result.stderr
    assert result.returncode != 0, f"{extra} was accepted"
    assert expected in " ".join(out.split()), out[-3000:]
    assert re.search(r"apes-pgbackrest-db\s*:.*changed=0\s", out), "nothing may change"
    return out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            {"postgresql_restore_type": "time", "postgresql_restore_target": "2026-11-29 12:00:00"},
            "postgresql_restore_target '2026-11-29 12:00:00' must be a timestamp with an explicit time zone",
            id="time-without-zone",
        ),
        pytest.param(
            {"postgresql_restore_type": "time", "postgresql_restore_target": "days-ago"},
            "is before the end of the oldest usable backup",
            id="time-before-the-oldest-backup",
        ),
        pytest.param(
            {"postgresql_restore_type": "time", "postgresql_restore_target": "tomorrow"},
            "is in the future",
            id="time-in-the-future",
        ),
        pytest.param(
            {"postgresql_restore_set": "20200101-000000F"},
            "postgresql_restore_set: 20200101-000000F is not a usable backup of stanza main",
            id="unknown-backup-set",
        ),
        pytest.param(
            # The inventory says this host is a replica (and asks for a re-clone, so that the role's own
            # facts accept it): restored in place, it would become a second primary.
            {
                "postgresql_replication_role": "replica",
                "postgresql_primary_host": REPO,
                "postgresql_replica_reclone": True,
            },
            "is a replica (postgresql_facts.replication_role=replica",
            id="replica",
        ),
    ],
)
def test_in_place_restore_refused_before_anything_stops(host, run_playbook, extra, expected):
    now = datetime.now(UTC)
    relative = {"days-ago": now - timedelta(days=10), "tomorrow": now + timedelta(days=1)}
    if extra.get("postgresql_restore_target") in relative:
        extra = {**extra, "postgresql_restore_target": relative[extra["postgresql_restore_target"]].isoformat(" ")}
    before, timers = postmaster(host), timer_starts()
    refused(run_playbook, expected, **IN_PLACE, **extra)
    assert postmaster(host) == before, "PostgreSQL must not have been stopped"
    assert timer_starts() == timers, "the backup timers must not have been touched"
    assert aside_dirs(host, "before-restore") == []


def test_restore_refused_without_the_free_space(host, run_playbook):
    """A copy needs the backup's database size free where it goes; a 1 MiB file system is refused."""
    host.run_expect([0], "mkdir -p /mnt/small && mount -t tmpfs -o size=1m tmpfs /mnt/small")
    try:
        refused(
            run_playbook,
            "/mnt/small has 1.00 MB free; the restore needs",
            postgresql_restore_directory="/mnt/small/copy",
        )
        assert not host.file("/mnt/small/copy").exists
    finally:
        host.run("umount /mnt/small")


def test_in_place_restore_refused_for_a_cluster_the_stanza_does_not_back_up(host, run_playbook):
    """The stanza's pg1-path is 15/main: an in-place restore over another cluster (15/aaa) is refused."""
    host.run_expect([0], "pg_createcluster 15 aaa >/dev/null")
    try:
        before = postmaster(host)
        refused(
            run_playbook,
            "stanza main backs up /var/lib/postgresql/15/main (/etc/pgbackrest/pgbackrest.conf), not the data directory"
            " of cluster 15/aaa, /var/lib/postgresql/15/aaa",
            **IN_PLACE,
            postgresql_cluster_name="aaa",
            postgresql_port=5433,
        )
        assert postmaster(host) == before
    finally:
        host.run("pg_dropcluster 15 aaa")


def test_in_place_restore_refused_when_archiving_does_not_catch_up(host, table, run_playbook, wait_archived):
    """WAL that cannot reach the repository would be lost by an in-place restore: refused before the stop."""
    psql(host, "ALTER SYSTEM SET archive_command = 'false'")
    psql(host, "SELECT pg_reload_conf()")
    try:
        psql(host, "INSERT INTO drill (id, batch) VALUES (400000, 'unarchivable')")
        before, timers = postmaster(host), timer_starts()
        result = run_playbook(RESTORE, extra_vars={**IN_PLACE, "postgresql_restore_archive_wait": 6})
        out = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0
        assert "was not archived within 6 s (postgresql_restore_archive_wait)" in out, out[-3000:]
        assert "Nothing was stopped" in out
        assert postmaster(host) == before, "PostgreSQL must not have been stopped"
        assert timers_active() == ["active"] * 3, "the timers paused for the restore are resumed"
        assert timer_starts() != timers, "the timers were paused during the attempt"
    finally:
        psql(host, "ALTER SYSTEM RESET archive_command")
        psql(host, "SELECT pg_reload_conf()")
    wait_archived(host)


def test_in_place_restore_at_once_keeps_the_commits_not_yet_archived(
    host, table, run_playbook, restored_backup_set, wait_archived
):
    """Rows committed just before the restore are in WAL that archive_timeout (60 s) has not pushed yet; the
    restored data directory starts empty (no pg_wal of the old one), so they come back only from the repository.
    (PostgreSQL's clean shutdown switches WAL too, and archives it when the archiver can: the restore's own switch and
    wait, before the stop, is what refuses when it cannot; see the test before this one.)"""
    # A segment switch just now: archive_timeout will not switch again during the restore (about 20 s).
    wait_archived(host)
    psql(host, "INSERT INTO drill (id, batch) SELECT g, 'just-before' FROM generate_series(500000, 500009) g")
    expected = psql(host, "SELECT count(*), md5(string_agg(id || ':' || batch, ',' ORDER BY id)) FROM drill")
    before, timers = postmaster(host), timer_starts()
    out = restore(run_playbook, **IN_PLACE)
    restored_backup_set(out)
    assert postmaster(host) != before, "PostgreSQL was restarted on the restored data"
    assert psql(host, "SELECT pg_is_in_recovery()") == "f"
    assert psql(host, "SELECT count(*), md5(string_agg(id || ':' || batch, ',' ORDER BY id)) FROM drill") == expected
    kept = aside_dirs(host, "before-restore")
    assert len(kept) == 1, kept
    assert f"the data directory before the restore is in {kept[0]}" in " ".join(out.split())
    assert host.file(f"{kept[0]}/PG_VERSION").exists, "the old data directory is kept whole"
    assert timers_active() == ["active"] * 3
    assert timer_starts() != timers, "the backup timers were paused during the restore"
    repo("runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=main", "check")


def test_failed_in_place_restore_brings_the_old_cluster_back(host, table, run_playbook):
    """A restore point that does not exist: the files are restored, then recovery ends without reaching the target
    and the restored cluster does not start. The rescue puts the old data directory back and starts it."""
    psql(host, "INSERT INTO drill (id, batch) VALUES (600000, 'before-failed-restore')")
    checksum_sql = "SELECT count(*), md5(string_agg(id || ':' || batch, ',' ORDER BY id)) FROM drill"
    expected = psql(host, checksum_sql)
    system_id = psql(host, "SELECT system_identifier FROM pg_control_system()")
    kept_before = aside_dirs(host, "before-restore")
    timers = timer_starts()
    result = run_playbook(
        RESTORE,
        extra_vars={**IN_PLACE, "postgresql_restore_type": "name", "postgresql_restore_target": "no_such_point"},
    )
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    failed = aside_dirs(host, "failed-restore")
    assert len(failed) == 1, failed
    back = "The old cluster is back in /var/lib/postgresql/15/main and running"
    assert f"{back} (the failed restore is kept in {failed[0]})" in out, out[-3000:]
    # The same cluster as before, with every row, and accepting writes.
    assert psql(host, "SELECT pg_is_in_recovery()") == "f"
    assert psql(host, checksum_sql) == expected
    assert psql(host, "SELECT system_identifier FROM pg_control_system()") == system_id
    psql(host, "INSERT INTO drill (id, batch) VALUES (600001, 'after-failed-restore')")
    assert aside_dirs(host, "before-restore") == kept_before, "the aside directory went back in place"
    assert timers_active() == ["active"] * 3
    assert timer_starts() != timers, "the timers were paused, and resumed after the failure"
    host.run_expect([0], f"rm -rf {failed[0]}")
