"""The pgbackrest_info module end to end: it runs as Ansible runs it (a subprocess reading its
arguments from a file) against a stand-in `pgbackrest` executable that prints JSON recorded from
real pgBackRest runs, and checks exit status and result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pgbackrest"
MODULE = ROOT / "plugins" / "modules" / "pgbackrest_info.py"


def fake_pgbackrest(tmp_path, fixture, rc=0, age=None):
    """A stand-in executable printing recorded JSON.

    With ``age`` (seconds), the recorded backups are moved in time when the stand-in runs, so that
    the newest one finished exactly ``age`` seconds before that moment, whatever today's date is;
    the module reads its clock right after (milliseconds later).
    """
    (tmp_path / "info.json").write_text((FIXTURES / fixture).read_text())
    script = tmp_path / "pgbackrest"
    script.write_text(
        f"""#!{sys.executable}
import json, sys, time
with open({str(tmp_path / "args")!r}, "w") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
with open({str(tmp_path / "info.json")!r}) as fh:
    data = json.load(fh)
age = {age!r}
if age is not None:
    newest = max(b["timestamp"]["stop"] for s in data for b in s["backup"])
    shift = int(time.time()) - age - newest
    for stanza in data:
        for backup in stanza["backup"]:
            backup["timestamp"] = {{k: v + shift for k, v in backup["timestamp"].items()}}
print(json.dumps(data))
sys.exit({rc})
"""
    )
    script.chmod(0o755)
    return script


def run_module(tmp_path, **args):
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".collections") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, env=env, check=False
    )
    return proc.returncode, json.loads(proc.stdout)


def test_reports_stanzas(tmp_path):
    exe = fake_pgbackrest(tmp_path, "info-2.55.1.json")
    rc, result = run_module(tmp_path, executable=str(exe))
    assert rc == 0, result
    assert result["changed"] is False
    assert result["stanzas"]["main"]["newest"]["full"]["type"] == "full"
    assert (tmp_path / "args").read_text().split() == ["--output=json", "info"]


def test_stanza_config_and_repo_are_passed(tmp_path):
    exe = fake_pgbackrest(tmp_path, "info-stanza-2.45.json")
    rc, _result = run_module(tmp_path, executable=str(exe), stanza="main", config="/etc/x.conf", repo=1)
    assert rc == 0
    assert (tmp_path / "args").read_text().split() == [
        "--output=json",
        "--config=/etc/x.conf",
        "--stanza=main",
        "--repo=1",
        "info",
    ]


HOUR = 3600


@pytest.mark.parametrize(
    ("age", "fresh"),
    [
        pytest.param(0, True, id="just-finished"),
        pytest.param(1 * HOUR, True, id="1h"),
        pytest.param(25 * HOUR, True, id="25h"),
        pytest.param(27 * HOUR, False, id="27h"),
        pytest.param(400 * 24 * HOUR, False, id="400d"),
    ],
)
def test_max_age_verdict_by_age_of_newest_backup(tmp_path, age, fresh):
    exe = fake_pgbackrest(tmp_path, "info-2.45.json", age=age)
    rc, result = run_module(tmp_path, executable=str(exe), max_age="26h")
    stanza = result["stanzas"]["main"]
    # The module's clock runs a moment after the stand-in's: allow a few seconds, not hours.
    assert age <= stanza["age_seconds"] <= age + 5, stanza
    if fresh:
        assert rc == 0, result
        assert result["problems"] == []
        assert "failed" not in result
    else:
        assert rc == 1, result
        assert result["failed"] is True
        assert result["problems"] == [result["msg"]]
        assert result["msg"].startswith(f"stanza main: newest backup {stanza['latest']['label']} finished ")
        assert result["msg"].endswith("older than max_age (93600 s)")


def test_max_age_fails_without_backups(tmp_path):
    exe = fake_pgbackrest(tmp_path, "info-empty-2.45.json")
    rc, result = run_module(tmp_path, executable=str(exe), max_age="26h")
    assert rc == 1
    assert "no backup in the repository" in result["msg"]


def test_missing_stanza_fails(tmp_path):
    exe = fake_pgbackrest(tmp_path, "info-missing-2.55.1.json")
    rc, result = run_module(tmp_path, executable=str(exe), stanza="nope")
    assert rc == 1
    assert result["msg"] == "stanza nope: missing stanza path"


def test_bad_max_age_names_the_option(tmp_path):
    exe = fake_pgbackrest(tmp_path, "info-2.45.json")
    rc, result = run_module(tmp_path, executable=str(exe), max_age="soon")
    assert rc == 1
    assert result["msg"].startswith("max_age must be")


@pytest.mark.parametrize("rc", [1, 28])
def test_command_failure_is_reported(tmp_path, rc):
    exe = fake_pgbackrest(tmp_path, "info-2.45.json", rc=rc)
    code, result = run_module(tmp_path, executable=str(exe))
    assert code == 1
    assert f"pgbackrest info failed (rc {rc})" in result["msg"]
