"""Helpers shared by the Molecule scenarios' testinfra tests.

Tests run from molecule/<scenario>/ with Molecule's environment (MOLECULE_INVENTORY_FILE,
ANSIBLE_CONFIG, ...), so they can run playbooks against the scenario's instances exactly as
converge does, e.g. to prove that bad input fails before any change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


def _run_playbook(
    playbook: str | Path, extra_vars: dict | None = None, limit: str | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if limit:
        cmd += ["--limit", limit]
    if check:
        cmd.append("--check")
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / ".collections"))
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="session")
def run_playbook():
    """run_playbook(path, extra_vars=None, limit=None, check=False) -> CompletedProcess."""
    return _run_playbook


def _ansible_module(host_or_name, module: str, args: dict, check: bool = False) -> dict:
    """Run one module on one instance through Ansible (as converge does) and return its result."""
    name = host_or_name if isinstance(host_or_name, str) else host_or_name.backend.get_hostname()
    cmd = ["ansible", "-i", os.environ["MOLECULE_INVENTORY_FILE"], name, "-m", module, "-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / ".collections"))
    env.update(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"no JSON from ansible (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
        ) from exc
    return data["plays"][0]["tasks"][0]["hosts"][name]


@pytest.fixture(scope="session")
def ansible_module():
    """ansible_module(host, module, args, check=False) -> the module's result dict."""
    return _ansible_module


@pytest.fixture(scope="session")
def project_dir() -> Path:
    return PROJECT


def host_name(host) -> str:
    return host.backend.get_hostname()


def _wait_for(predicate, timeout: float, what: str, step: float = 1.0):
    """Poll predicate until it returns something truthy and return that; fail the test on timeout,
    naming what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last value: {value!r})")
        time.sleep(step)


# A pgBackRest backup label: full, or a differential/incremental on top of one.
_BACKUP_LABEL = re.compile(r"\b(\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?)\b")


def _restored_backup_set(playbook_output: str) -> str:
    """The backup label that postgresql_restore.yml reports ("Restored backup set: <label>");
    fails the test when the report is missing or names no label."""
    lines = [line for line in playbook_output.splitlines() if "Restored backup set:" in line]
    assert lines, "the restore playbook did not report the backup set"
    found = _BACKUP_LABEL.search(lines[-1].split("Restored backup set:", 1)[1])
    assert found, f"the restore playbook reported no backup label: {lines[-1]!r}"
    return found.group(1)


def _seconds_since_created(container: str) -> int:
    """Seconds since Docker created the container: when this scenario's run began for it. Backups
    made during the run are younger than this, however long converge took."""
    created = subprocess.run(
        ["docker", "inspect", "-f", "{{.Created}}", container], capture_output=True, text=True, check=True
    ).stdout.strip()
    # Docker prints RFC 3339 with nanoseconds: keep microseconds for fromisoformat.
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", created).replace("Z", "+00:00")
    return int(time.time() - datetime.fromisoformat(stamp).timestamp()) + 1


@pytest.fixture(scope="session")
def wait_for():
    """wait_for(predicate, timeout, what, step=1.0) -> the predicate's first truthy value; fails on timeout."""
    return _wait_for


@pytest.fixture(scope="session")
def restored_backup_set():
    """restored_backup_set(playbook stdout) -> the label postgresql_restore.yml restored."""
    return _restored_backup_set


@pytest.fixture(scope="session")
def seconds_since_created():
    """seconds_since_created(container) -> seconds since the scenario created it."""
    return _seconds_since_created
