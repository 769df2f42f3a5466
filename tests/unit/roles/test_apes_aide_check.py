"""apes-aide-check (security_baseline): AIDE's JSON report to log lines and gauges."""

from __future__ import annotations

import json
import sys

import pytest
from role_scripts import FIXTURES, load_role_script

aide = load_role_script("security_baseline", "apes-aide-check")
REPORT = (FIXTURES / "aide-report.json").read_text()


def test_summarize_counts_and_paths():
    summary = aide.summarize(REPORT, 7)
    assert (summary["added"], summary["removed"], summary["changed"]) == (3, 2, 3)
    assert summary["entries"] == 16377
    assert summary["aide_version"] == "0.18.3"
    assert summary["paths"]["removed"] == ["/etc/rc2.d/S01auditd", "/etc/rc3.d/S01auditd"]
    assert summary["status"] == 7


def test_summarize_no_differences():
    summary = aide.summarize(json.dumps({"number_of_entries": {"total": 10, "added": 0}}), 0)
    assert (summary["added"], summary["removed"], summary["changed"], summary["entries"]) == (0, 0, 0, 10)


@pytest.mark.parametrize(
    ("text", "status", "message"),
    [(REPORT, 17, "invalid configuration"), (REPORT, 18, "input/output error"), ("{x", 0, "not JSON")],
)
def test_summarize_refuses_failed_checks(text, status, message):
    with pytest.raises(ValueError, match=message):
        aide.summarize(text, status)


def test_events_summary_and_paths():
    lines = aide.events(aide.summarize(REPORT, 7), "t", max_paths=200)
    assert lines[0]["event"] == "aide.check"
    assert lines[0]["severity"] == "WARN"
    assert lines[0]["message"] == "AIDE: 3 added, 2 removed, 3 changed"
    assert [line["event"] for line in lines[1:]] == ["aide.added"] * 3 + ["aide.removed"] * 2 + ["aide.changed"] * 3
    assert lines[1]["path"] == "/etc/default/ssh"


def test_events_truncated():
    lines = aide.events(aide.summarize(REPORT, 7), "t", max_paths=4)
    assert len(lines) == 6
    assert lines[-1]["event"] == "aide.truncated"
    assert lines[-1]["message"].startswith("4 more differences")


def test_events_clean():
    lines = aide.events(aide.summarize("{}", 0), "t", max_paths=10)
    assert lines == [
        {
            "time": "t",
            "event": "aide.check",
            "severity": "INFO",
            "entries": 0,
            "added": 0,
            "removed": 0,
            "changed": 0,
            "message": "AIDE: no differences from the database",
        }
    ]


def test_telemetry():
    document = aide.telemetry(aide.summarize(REPORT, 7), None, 10.9, "db1")
    assert document["resource"] == {"service.name": "aide", "host.name": "db1"}
    by_kind = {g["attributes"]["kind"]: g["value"] for g in document["gauges"] if g["name"] == "apes_aide_differences"}
    assert by_kind == {"added": 3, "removed": 2, "changed": 3}
    values = {g["name"]: g["value"] for g in document["gauges"] if g["name"] != "apes_aide_differences"}
    assert values == {
        "apes_aide_check_success": 1,
        "apes_aide_last_check_timestamp_seconds": 10,
        "apes_aide_entries": 16377,
    }
    failed = aide.telemetry(None, "no database", 10, "db1")
    assert [(g["name"], g["value"]) for g in failed["gauges"]] == [
        ("apes_aide_check_success", 0),
        ("apes_aide_last_check_timestamp_seconds", 10),
    ]


def _script(tmp_path, name: str, body: str):
    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    script.chmod(0o755)
    return script


def test_main_check_logs_emits_and_exits_zero_on_differences(tmp_path):
    fake_aide = _script(tmp_path, "aide", f"print(open({str(FIXTURES / 'aide-report.json')!r}).read())\nsys.exit(7)")
    emitter = _script(tmp_path, "emit", f"open({str(tmp_path / 'sent.json')!r}, 'w').write(sys.stdin.read())")
    log = tmp_path / "aide.log"
    assert aide.main(["--aide", str(fake_aide), "--log", str(log), "--emit", str(emitter)]) == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[0]["message"] == "AIDE: 3 added, 2 removed, 3 changed"
    sent = json.loads((tmp_path / "sent.json").read_text())
    assert {"name": "apes_aide_check_success", "value": 1, "unit": "1"}.items() <= sent["gauges"][0].items()


def test_main_reports_a_failed_check(tmp_path, capsys):
    fake_aide = _script(tmp_path, "aide", "print('Cannot open database', file=sys.stderr)\nsys.exit(18)")
    log = tmp_path / "aide.log"
    assert aide.main(["--aide", str(fake_aide), "--log", str(log)]) == 1
    event = json.loads(log.read_text())
    assert event["event"] == "aide.error"
    assert "input/output error" in event["message"]
    assert "Cannot open database" in event["message"]
    assert "input/output error" in capsys.readouterr().err


def test_accept_replaces_the_database(tmp_path):
    database, new = tmp_path / "aide.db", tmp_path / "aide.db.new"
    database.write_text("old")
    fake_aide = _script(tmp_path, "aide", f"open({str(new)!r}, 'w').write('new')\nsys.exit(4)")
    argv = ["--aide", str(fake_aide), "--accept", "--database", str(database), "--database-new", str(new)]
    assert aide.main(argv) == 0
    assert database.read_text() == "new"
    assert not new.exists()


def test_accept_keeps_the_database_when_the_update_fails(tmp_path, capsys):
    database = tmp_path / "aide.db"
    database.write_text("old")
    fake_aide = _script(tmp_path, "aide", "sys.exit(17)")
    assert aide.main(["--aide", str(fake_aide), "--accept", "--database", str(database)]) == 1
    assert database.read_text() == "old"
    assert "aide --update failed (17)" in capsys.readouterr().err


def test_init_makes_the_first_database(tmp_path):
    database, new = tmp_path / "aide.db", tmp_path / "aide.db.new"
    fake_aide = _script(tmp_path, "aide", f"assert sys.argv[2] == '--init'\nopen({str(new)!r}, 'w').write('first')")
    argv = ["--aide", str(fake_aide), "--init", "--database", str(database), "--database-new", str(new)]
    assert aide.main(argv) == 0
    assert database.read_text() == "first"


def test_init_fails_on_any_aide_error(tmp_path, capsys):
    fake_aide = _script(tmp_path, "aide", "sys.exit(1)")
    argv = ["--aide", str(fake_aide), "--init", "--database", str(tmp_path / "db")]
    assert aide.main(argv) == 1
    assert not (tmp_path / "db").exists()
    assert "aide --init failed (1)" in capsys.readouterr().err
