"""Streaming replication between systemd containers: primary, replica, and a replica added later."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
import uuid
from pathlib import Path

import pytest
import testinfra

HERE = Path(__file__).resolve().parent
PRIMARY = "apes-pgrepl-primary"
REPLICA = "apes-pgrepl-replica"
LATER = "apes-pgrepl-replica2"
COUNT_MARKER = "SELECT count(*) FROM app.replication_probe WHERE marker = :'marker'"


def get(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def query(host, sql: str, db: str = "postgres", check: bool = True, **params: str):
    """Run SQL as postgres over the local socket; params become psql variables (:'name')."""
    variables = " ".join(f"-v {k}={shlex.quote(v)}" for k, v in params.items())
    command = f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 {variables} -d {db} -f -"
    result = host.run(f"printf '%s\\n' {shlex.quote(sql)} | {command}")
    if check:
        assert result.rc == 0, result.stderr
    return result


def wait_for(host, sql: str, expected: str, db: str = "postgres", seconds: int = 30, **params: str) -> str:
    deadline = time.monotonic() + seconds
    value = None
    while time.monotonic() < deadline:
        value = query(host, sql, db, check=False, **params).stdout.strip()
        if value == expected:
            return value
        time.sleep(0.5)
    return value


@pytest.fixture(scope="module")
def primary():
    return get(PRIMARY)


@pytest.fixture(scope="module")
def replica():
    return get(REPLICA)


def test_replica_is_a_hot_standby(replica):
    assert query(replica, "SELECT pg_is_in_recovery()").stdout.strip() == "t"
    assert query(replica, "SHOW hot_standby").stdout.strip() == "on"
    assert query(replica, "SHOW data_checksums").stdout.strip() == "on"
    assert replica.file("/var/lib/postgresql/15/main/standby.signal").exists
    assert not replica.file("/etc/postgresql/15/main/apes-infra-clone-pending").exists


def test_primary_shows_the_replica_streaming_over_tls(primary):
    sql = (
        "SELECT r.application_name, r.state, s.ssl, sl.active"
        " FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)"
        " JOIN pg_replication_slots sl ON sl.active_pid = r.pid"
        " WHERE r.application_name = 'apes_pgrepl_replica'"
    )
    assert wait_for(primary, sql, "apes_pgrepl_replica|streaming|t|t") == "apes_pgrepl_replica|streaming|t|t"
    assert query(primary, "SELECT rolreplication FROM pg_roles WHERE rolname = 'replicator'").stdout.strip() == "t"
    assert query(primary, "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'replicator'").stdout.startswith(
        "SCRAM-SHA-256$"
    )


def test_row_written_on_primary_is_read_on_replica(primary, replica):
    marker = uuid.uuid4().hex
    query(primary, "CREATE TABLE IF NOT EXISTS app.replication_probe (marker text)", "app")
    query(primary, "INSERT INTO app.replication_probe VALUES (:'marker')", "app", marker=marker)
    assert wait_for(replica, COUNT_MARKER, "1", "app", marker=marker) == "1"


def test_writes_on_replica_are_refused(replica):
    result = query(replica, "CREATE TABLE app.should_not_exist (id int)", "app", check=False)
    assert result.rc != 0
    assert "cannot execute CREATE TABLE in a read-only transaction" in result.stderr


def test_replication_needs_the_password(primary, replica):
    """The replication role logs in with SCRAM over TLS only."""
    conninfo = "host=apes-pgrepl-primary user=replicator dbname=replication replication=true sslmode=require"
    result = replica.run(f"PGPASSWORD=wrong psql -X {shlex.quote(conninfo)} -c 'IDENTIFY_SYSTEM'")
    assert result.rc != 0
    assert 'password authentication failed for user "replicator"' in result.stderr
    plain = replica.run(f"PGPASSWORD=wrong psql -X {shlex.quote(conninfo.replace('require', 'disable'))} -c 'SELECT 1'")
    assert plain.rc != 0
    assert "no encryption" in plain.stderr
    passfile = replica.file("/var/lib/postgresql/.pgpass")
    assert (passfile.user, passfile.mode) == ("postgres", 0o600)


def test_facts_name_each_host_s_role_and_primary(run_playbook):
    """postgresql_facts (entry point `facts`, one read-only probe) on the primary and the replica."""
    env = {"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}
    result = run_playbook(HERE.parent / "facts.yml", env_extra=env, limit="postgresql")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    facts = {h: r["postgresql_facts"] for h, r in report["plays"][0]["tasks"][-1]["hosts"].items()}
    assert {h: (f["replication_role"], f["primary_host"]) for h, f in facts.items()} == {
        PRIMARY: ("primary", PRIMARY),
        REPLICA: ("replica", PRIMARY),
    }
    assert facts[REPLICA]["data_directory"] == "/var/lib/postgresql/15/main"
    assert facts[REPLICA]["tls"]["ca_file"] == "/etc/postgresql/15/main/tls/ca.crt"


def changed_tasks(out: str, host: str) -> set[str]:
    """Names of the tasks and handlers that reported a change on host in an ansible-playbook output (a handler's
    change is its own, not that of the task before it, e.g. the flush_handlers task)."""
    changed = set()
    task = None
    for line in out.splitlines():
        match = re.match(r"(?:TASK|RUNNING HANDLER) \[(?:[^:\]]+ : )?(.+?)\] \*", line)
        if match:
            task = match.group(1)
        elif task and re.match(rf"changed: \[{re.escape(host)}(\]| ->)", line):
            changed.add(task)
    return changed


def test_adding_a_replica_and_rerunning(primary, replica, run_converge_with_inventory):
    """The new replica is cloned; the others only learn its address (a reload, no restart)."""
    later = get(LATER)
    started = {h: query(h, "SELECT pg_postmaster_start_time()").stdout for h in (primary, replica)}
    result = run_converge_with_inventory(HERE / "add_replica.yml")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    reload_only = {
        "Write the settings and client authentication (checked by PostgreSQL before they go live)",
        "Reload PostgreSQL",
    }
    slot_tasks = {
        "Create a physical replication slot per replica",
        "Record the replicas' slots (apes_infra.replication_slots) and forget the dropped ones",
    }
    assert changed_tasks(out, PRIMARY) <= reload_only | slot_tasks
    assert changed_tasks(out, REPLICA) <= reload_only
    assert "Copy the primary with pg_basebackup" in changed_tasks(out, LATER)
    assert {h: query(h, "SELECT pg_postmaster_start_time()").stdout for h in (primary, replica)} == started
    sql = "SELECT state FROM pg_stat_replication WHERE application_name = 'apes_pgrepl_replica2'"
    assert wait_for(primary, sql, "streaming") == "streaming"
    marker = uuid.uuid4().hex
    query(primary, "INSERT INTO app.replication_probe VALUES (:'marker')", "app", marker=marker)
    assert wait_for(later, COUNT_MARKER, "1", "app", marker=marker) == "1"

    again = run_converge_with_inventory(HERE / "add_replica.yml")
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    recap = dict(re.findall(r"^(apes-pgrepl-\S+)\s*:.*changed=(\d+)", out, re.M))
    assert recap == {PRIMARY: "0", REPLICA: "0", LATER: "0"}, recap


def test_failed_reclone_puts_the_old_data_directory_back(primary, replica, run_playbook):
    """A re-clone whose pg_basebackup fails (the primary's address given as the replica's own loopback, where nothing
    listens once the replica is stopped) moves the old data directory back from .before-reclone-* and starts the
    replica again. A normal converge then puts the address back, and the replica streams as before."""
    pgdata = query(replica, "SHOW data_directory").stdout.strip()
    marker = f"{pgdata}/apes-test-before-reclone"
    replica.run_expect([0], f"runuser -u postgres -- touch {marker}")
    converge = HERE.parent / "converge.yml"
    result = run_playbook(
        converge,
        extra_vars={"postgresql_replica_reclone": True, "postgresql_primary_address": "127.0.0.1"},
        limit=REPLICA,
    )
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, out[-3000:]
    assert 'failed at "Copy the primary with pg_basebackup"' in out, out[-3000:]
    assert f"The old data directory is back in {pgdata} and the replica runs again" in out, out[-3000:]
    # The very directory from before (the marker is in it), nothing left aside, a hot standby again.
    assert replica.file(marker).exists
    assert replica.run(f"ls -d {pgdata}.before-reclone-*").rc != 0
    assert query(replica, "SELECT pg_is_in_recovery()").stdout.strip() == "t"

    again = run_playbook(converge)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    sql = "SELECT state FROM pg_stat_replication WHERE application_name = 'apes_pgrepl_replica'"
    assert wait_for(primary, sql, "streaming", seconds=60) == "streaming"
    row = uuid.uuid4().hex
    query(primary, "INSERT INTO app.replication_probe VALUES (:'marker')", "app", marker=row)
    assert wait_for(replica, COUNT_MARKER, "1", "app", marker=row) == "1"
    replica.run_expect([0], f"rm -f {marker}")


SLOTS = "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots"
RECORDED = "SELECT string_agg(slot_name::text, ',' ORDER BY slot_name) FROM apes_infra.replication_slots"


def test_a_removed_replica_s_slot_is_dropped_and_other_slots_stay(primary, run_converge_with_inventory):
    """After the previous test, replica2 streams through its slot. It dies and leaves the inventory: while it is
    away max_slot_wal_keep_size bounds the WAL its slot holds, and the next run drops the slot, but neither
    the remaining replica's slot nor a slot of another tool (as a backup server's would be)."""
    later = get(LATER)
    slot = "apes_pgrepl_replica2"
    assert query(primary, RECORDED).stdout.strip() == f"apes_pgrepl_replica,{slot}"
    query(primary, "SELECT pg_create_physical_replication_slot('other_tool', true)")
    try:
        stopped = later.run("systemctl stop postgresql@15-main")
        assert stopped.rc == 0, stopped.stderr
        active = "SELECT active FROM pg_replication_slots WHERE slot_name = :'slot'"
        assert wait_for(primary, active, "f", slot=slot) == "f"
        assert query(primary, "SHOW max_slot_wal_keep_size").stdout.strip() == "10GB"
        # NULL when max_slot_wal_keep_size is -1: without the limit the dead replica's slot keeps all WAL.
        bounded = "SELECT safe_wal_size IS NOT NULL FROM pg_replication_slots WHERE slot_name = :'slot'"
        assert query(primary, bounded, slot=slot).stdout.strip() == "t"

        result = run_converge_with_inventory(None)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-4000:]
        assert "Drop the slots of replicas that left the inventory" in changed_tasks(out, PRIMARY)
        assert query(primary, SLOTS).stdout.strip() == "apes_pgrepl_replica,other_tool"
        assert query(primary, RECORDED).stdout.strip() == "apes_pgrepl_replica"
        streaming = "SELECT state FROM pg_stat_replication WHERE application_name = 'apes_pgrepl_replica'"
        assert wait_for(primary, streaming, "streaming") == "streaming"

        again = run_converge_with_inventory(None)
        out = again.stdout + again.stderr
        assert again.returncode == 0, out[-4000:]
        recap = dict(re.findall(r"^(apes-pgrepl-\S+)\s*:.*changed=(\d+)", out, re.M))
        assert recap == {PRIMARY: "0", REPLICA: "0"}, recap
    finally:
        query(primary, "SELECT pg_drop_replication_slot('other_tool')", check=False)
