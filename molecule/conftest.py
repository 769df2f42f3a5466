"""Helpers shared by the Molecule scenarios' testinfra tests.

Tests run from molecule/<scenario>/ with Molecule's environment (MOLECULE_INVENTORY_FILE,
ANSIBLE_CONFIG, ...), so they can run playbooks against the scenario's instances exactly as
converge does, e.g. to prove that bad input fails before any change.
"""

from __future__ import annotations

import json
import os
import subprocess
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
