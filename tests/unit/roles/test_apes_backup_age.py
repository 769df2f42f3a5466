"""apes-backup-age (otel_collector, entry point emitter): newest backup, freshness, the report and the exit status."""

from __future__ import annotations

import json
import os
import stat

import pytest
from role_scripts import load_role_script

age = load_role_script("otel_collector", "apes-backup-age")
# A fixed clock: nothing here depends on today's date.
NOW = 1_800_000_000.0


def pgbackrest_info(*stops: int, name: str = "main") -> list:
    return [
        {"name": "other", "backup": [{"timestamp": {"start": 1, "stop": NOW + 10}}]},
        {"name": name, "backup": [{"timestamp": {"start": stop - 60, "stop": stop}, "type": "full"} for stop in stops]},
    ]


def test_newest_pgbackrest_backup_of_the_stanza_only():
    assert age.newest_pgbackrest(pgbackrest_info(100, 300, 200), "main") == 300.0
    assert age.newest_pgbackrest(pgbackrest_info(), "main") is None
    assert age.newest_pgbackrest(pgbackrest_info(100), "missing") is None


def test_newest_file_by_modification_time(tmp_path):
    for name, mtime in [("dump-a.rdb", 100), ("dump-b.rdb", 500), ("dump-c.rdb.sha256", 900)]:
        path = tmp_path / name
        path.write_text("x")
        os.utime(path, (mtime, mtime))
    (tmp_path / "dump-dir.rdb").mkdir()
    assert age.newest_file(str(tmp_path / "dump-*.rdb")) == 500
    assert age.newest_file(str(tmp_path / "none-*.rdb")) is None


def test_fresh_backup_sends_age_and_no_error():
    result = age.assess("pgbackrest", {"stanza": "main"}, NOW - 3600, 7200, NOW)
    assert result["fresh"]
    gauges = {g["name"]: g for g in result["document"]["gauges"]}
    assert gauges["apes_backup_age_seconds"]["value"] == 3600
    assert gauges["apes_backup_fresh"]["value"] == 1
    assert gauges["apes_backup_max_age_seconds"]["value"] == 7200
    assert gauges["apes_backup_fresh"]["attributes"] == {"backup": "pgbackrest", "stanza": "main"}
    assert result["document"]["logs"] == []


def test_stale_backup_sends_an_error():
    result = age.assess("redis", {}, NOW - 7201, 7200, NOW)
    assert not result["fresh"]
    gauges = {g["name"]: g["value"] for g in result["document"]["gauges"]}
    assert gauges["apes_backup_fresh"] == 0
    assert gauges["apes_backup_age_seconds"] == 7201
    [log] = result["document"]["logs"]
    assert log["severity"] == "ERROR"
    assert log["body"] == "redis: newest backup is 7201 s old, older than the maximum age of 7200 s"


def test_no_backup_is_stale_without_an_age():
    result = age.assess("pgbackrest", {"stanza": "main"}, None, 60, NOW)
    assert not result["fresh"]
    assert "apes_backup_age_seconds" not in {g["name"] for g in result["document"]["gauges"]}
    assert result["document"]["logs"][0]["body"] == "pgbackrest stanza=main: no backup found (maximum age 60 s)"


def fake_emitter(tmp_path, status: int):
    """An executable that keeps what it was sent and exits with `status` (the emitter's contract)."""
    received = tmp_path / "received.json"
    script = tmp_path / "emit"
    script.write_text(f"#!/bin/sh\ncat > {received}\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, received


@pytest.mark.parametrize(
    ("mtime_ago", "emit_status", "expected"),
    [(10, 0, 0), (10, 75, age.EX_TEMPFAIL), (120, 0, age.EX_STALE), (120, 75, age.EX_STALE)],
)
def test_exit_status(tmp_path, mtime_ago, emit_status, expected):
    backup = tmp_path / "dump-1.rdb"
    backup.write_text("x")
    os.utime(backup, (NOW - mtime_ago, NOW - mtime_ago))
    emit, received = fake_emitter(tmp_path, emit_status)
    argv = ["--backup", "redis", "--max-age", "60", "--newest", str(tmp_path / "dump-*.rdb"), "--emit", str(emit)]
    assert age.main(argv, now=NOW) == expected
    document = json.loads(received.read_text())
    assert {g["name"]: g["value"] for g in document["gauges"]}["apes_backup_fresh"] == (1 if mtime_ago < 60 else 0)


def test_unreadable_pgbackrest_is_reported_as_no_backup(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    failing = tmp_path / "pgbackrest"
    failing.write_text("#!/bin/sh\necho 'ERROR: [055]: unable to load info file' >&2\nexit 55\n")
    failing.chmod(0o755)
    emit, received = fake_emitter(tmp_path, 0)
    argv = ["--backup", "pgbackrest", "--max-age", "60", "--pgbackrest-stanza", "main", "--emit", str(emit)]
    assert age.main(argv, now=NOW) == age.EX_UNREADABLE
    assert json.loads(received.read_text())["logs"][0]["body"].endswith("no backup found (maximum age 60 s)")


@pytest.mark.parametrize(
    "argv",
    [
        ["--backup", "redis", "--max-age", "0", "--newest", "x"],
        ["--backup", "redis", "--max-age", "60"],
        ["--backup", "redis", "--max-age", "60", "--newest", "x", "--pgbackrest-stanza", "main"],
        ["--backup", "redis", "--max-age", "60", "--newest", "x", "--label", "novalue"],
    ],
)
def test_bad_command_line(argv):
    with pytest.raises(SystemExit) as exit_info:
        age.main(argv, now=NOW)
    assert exit_info.value.code == age.EX_USAGE
