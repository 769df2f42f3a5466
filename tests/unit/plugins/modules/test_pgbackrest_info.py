"""The pgbackrest_info module end to end: it runs as Ansible runs it (a subprocess reading its
arguments from a file) against a stand-in `pgbackrest` executable that prints JSON recorded from
real pgBackRest runs, and checks exit status and result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pgbackrest"
MODULE = ROOT / "plugins" / "modules" / "pgbackrest_info.py"


def fake_pgbackrest(tmp_path, fixture, rc=0, age_days=None):
    """A stand-in executable printing recorded JSON, optionally with backups moved age_days back."""
    data = json.loads((FIXTURES / fixture).read_text())
    if age_days is not None:
        newest = max(b["timestamp"]["stop"] for s in data for b in s["backup"])
        shift = int(time.time()) - newest + age_days * 86400
        for stanza in data:
            for backup in stanza["backup"]:
                backup["timestamp"] = {k: v - shift for k, v in backup["timestamp"].items()}
    (tmp_path / "info.json").write_text(json.dumps(data))
    script = tmp_path / "pgbackrest"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat {tmp_path}/info.json\nexit {rc}\n')
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


def test_max_age_fails_on_stale_backup(tmp_path):
    exe = fake_pgbackrest(tmp_path, "info-2.45.json", age_days=2)
    rc, result = run_module(tmp_path, executable=str(exe), max_age="26h")
    assert rc == 1
    assert result["failed"] is True
    assert "stanza main: newest backup" in result["msg"]
    assert "older than max_age (93600 s)" in result["msg"]


def test_max_age_passes_on_fresh_backup(tmp_path):
    exe = fake_pgbackrest(tmp_path, "info-2.45.json", age_days=0)
    rc, result = run_module(tmp_path, executable=str(exe), max_age="26h")
    assert rc == 0, result
    assert result["problems"] == []


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
