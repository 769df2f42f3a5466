"""Every role's README carries the reference generated from its meta/argument_specs.yml, up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_role_readmes_are_in_step_with_argument_specs():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "role_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
