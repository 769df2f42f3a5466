"""Helpers for the postgresql_replication scenario."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def run_converge_with_inventory():
    """run(extra_inventory) -> CompletedProcess: converge.yml with one more inventory source."""

    def run(extra_inventory: Path) -> subprocess.CompletedProcess:
        scenario = Path(__file__).resolve().parents[1]
        cmd = [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "-i",
            str(extra_inventory),
            str(scenario / "converge.yml"),
        ]
        env = dict(os.environ)
        env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / ".collections"))
        env["ANSIBLE_FORCE_COLOR"] = "0"
        env["ANSIBLE_NOCOLOR"] = "1"
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)

    return run
