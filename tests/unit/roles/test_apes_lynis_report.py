"""apes-lynis-report (security_baseline): Lynis' report and needrestart's output to log lines and gauges."""

from __future__ import annotations

import json
import sys

import pytest
from role_scripts import FIXTURES, load_role_script

lynis = load_role_script("security_baseline", "apes-lynis-report")
NEEDRESTART = """NEEDRESTART-VER: 3.6
NEEDRESTART-KCUR: 6.1.0-18-amd64
NEEDRESTART-KEXP: 6.1.0-20-amd64
NEEDRESTART-KSTA: 3
NEEDRESTART-SVC: postgresql@15-main.service
NEEDRESTART-SVC: dbus.service
NEEDRESTART-SVC: dbus.service
"""


def report():
    return lynis.parse_report((FIXTURES / "lynis-report.dat").read_text())


def test_parse_report_figures():
    parsed = report()
    assert parsed["hardening_index"] == 60
    assert parsed["lynis_version"] == "3.0.8"
    assert parsed["tests_performed"] == 232
    assert parsed["started"] == "2026-12-01 22:59:25"
    assert parsed["warnings"] == [
        {"test": "PKGS-7392", "text": "Found one or more vulnerable packages.", "details": "", "solution": ""}
    ]
    assert [s["test"] for s in parsed["suggestions"]] == ["DEB-0280", "DEB-0810", "DEB-0811", "DEB-0831", "DEB-0880"]
    assert parsed["suggestions"][0]["text"] == "Install libpam-tmpdir to set $TMP and $TMPDIR for PAM sessions"


def test_finding_keeps_details_and_solution():
    assert lynis._finding("FILE-7524|Consider restricting file permissions|See screen output|text:Use chmod|") == {
        "test": "FILE-7524",
        "text": "Consider restricting file permissions",
        "details": "See screen output",
        "solution": "text:Use chmod",
    }
    assert lynis._finding("X|short") == {"test": "X", "text": "short", "details": "", "solution": ""}


@pytest.mark.parametrize(
    ("text", "message"),
    [("lynis_version=3.0.8\n", "no hardening_index"), ("hardening_index=high\n", "is not a number")],
)
def test_parse_report_refuses_an_incomplete_report(text, message):
    with pytest.raises(ValueError, match=message):
        lynis.parse_report(text)


def test_parse_needrestart():
    assert lynis.parse_needrestart(NEEDRESTART) == {
        "services": ["dbus.service", "postgresql@15-main.service"],
        "kernel_status": 3,
    }
    # In a container needrestart reports no kernel status.
    assert lynis.parse_needrestart("NEEDRESTART-VER: 3.6\n") == {"services": [], "kernel_status": 0}


def test_events_summary_then_findings():
    lines = lynis.events(report(), lynis.parse_needrestart(NEEDRESTART), "2026-12-02T04:00:00+00:00")
    summary = lines[0]
    assert summary["event"] == "lynis.audit"
    assert summary["severity"] == "WARN"
    assert summary["hardening_index"] == 60
    assert (summary["warnings"], summary["suggestions"]) == (1, 5)
    assert summary["needrestart_services"] == ["dbus.service", "postgresql@15-main.service"]
    assert summary["message"] == "Lynis 3.0.8 hardening index 60, 1 warnings, 5 suggestions"
    assert [(line["event"], line["test"]) for line in lines[1:3]] == [
        ("lynis.warning", "PKGS-7392"),
        ("lynis.suggestion", "DEB-0280"),
    ]
    assert lines[1]["severity"] == "WARN"
    assert lines[2]["severity"] == "INFO"
    assert len(lines) == 7


def test_events_without_warnings_or_needrestart():
    parsed = report()
    parsed["warnings"] = []
    summary = lynis.events(parsed, None, "t")[0]
    assert summary["severity"] == "INFO"
    assert "needrestart_services" not in summary


def test_telemetry_gauges():
    document = lynis.telemetry(report(), lynis.parse_needrestart(NEEDRESTART), 1_764_648_000.7, "db1")
    assert document["resource"] == {"service.name": "lynis", "host.name": "db1"}
    gauges = {gauge["name"]: gauge for gauge in document["gauges"]}
    assert gauges["apes_lynis_hardening_index"]["value"] == 60
    assert gauges["apes_lynis_hardening_index"]["attributes"] == {"lynis.version": "3.0.8"}
    assert gauges["apes_lynis_warnings"]["value"] == 1
    assert gauges["apes_lynis_suggestions"]["value"] == 5
    assert gauges["apes_lynis_tests_performed"]["value"] == 232
    assert gauges["apes_lynis_last_run_timestamp_seconds"]["value"] == 1_764_648_000
    assert gauges["apes_needrestart_services"]["value"] == 2
    assert gauges["apes_needrestart_kernel_status"]["value"] == 3


def _fake_emitter(tmp_path, status: int):
    """A stand-in for apes-otlp-emit that keeps its stdin and exits with status."""
    script = tmp_path / "emit"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nopen({str(tmp_path / 'sent.json')!r}, 'w').write(sys.stdin.read())\n"
        f"sys.exit({status})\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("emit_status", [0, 75])
def test_main_logs_and_emits_and_succeeds_even_when_telemetry_fails(tmp_path, capsys, emit_status):
    log = tmp_path / "log" / "lynis.log"
    emitter = _fake_emitter(tmp_path, emit_status)
    argv = ["--no-audit", "--report", str(FIXTURES / "lynis-report.dat"), "--log", str(log), "--emit", str(emitter)]
    assert lynis.main(argv) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["event"] == "lynis.audit"
    assert lines[0]["hardening_index"] == 60
    assert oct(log.stat().st_mode & 0o777) == "0o640"
    sent = json.loads((tmp_path / "sent.json").read_text())
    assert "apes_lynis_hardening_index" in [gauge["name"] for gauge in sent["gauges"]]
    captured = capsys.readouterr()
    assert "hardening index 60" in captured.out
    assert ("telemetry not sent" in captured.err) == (emit_status != 0)
    # A second run appends: the log is the history.
    assert lynis.main(argv) == 0
    assert sum(json.loads(line)["event"] == "lynis.audit" for line in log.read_text().splitlines()) == 2


def test_main_fails_without_a_report(tmp_path, capsys):
    argv = ["--no-audit", "--report", str(tmp_path / "missing.dat"), "--log", str(tmp_path / "l")]
    assert lynis.main(argv) == 1
    assert "cannot read the Lynis report" in capsys.readouterr().err
    assert not (tmp_path / "l").exists()


def test_main_fails_when_lynis_fails(tmp_path, capsys):
    argv = ["--lynis", "false", "--report", str(FIXTURES / "lynis-report.dat"), "--log", str(tmp_path / "l")]
    assert lynis.main(argv) == 1
    assert "lynis exited with status 1" in capsys.readouterr().err
