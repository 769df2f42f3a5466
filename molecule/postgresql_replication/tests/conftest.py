"""Helpers for the postgresql_replication scenario."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def run_converge_with_inventory():
    """run(extra_inventory) -> CompletedProcess: converge.yml with one more inventory source (None: only
    the scenario's own)."""

    def run(extra_inventory: Path | None) -> subprocess.CompletedProcess:
        scenario = Path(__file__).resolve().parents[1]
        extra = ["-i", str(extra_inventory)] if extra_inventory else []
        cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], *extra, str(scenario / "converge.yml")]
        env = dict(os.environ)
        env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / ".collections"))
        env["ANSIBLE_FORCE_COLOR"] = "0"
        env["ANSIBLE_NOCOLOR"] = "1"
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)

    return run
