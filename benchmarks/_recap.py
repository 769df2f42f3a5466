"""Shared by the benchmark scripts: read ansible-playbook's PLAY RECAP, and run a playbook timed and counted."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.M)


def changed_per_host(stdout: str) -> dict[str, int]:
    """The changed count of every host in a PLAY RECAP."""
    return {m.group(1): int(m.group(2)) for m in _RECAP.finditer(stdout)}


# ansible.posix.profile_roles prints "<role> ---- 12.34s" lines at the end of the run, then a total.
_ROLE_TIME = re.compile(r"^(?:apes\.infra\.)?(?!total )(\w+) -+ (\d+\.\d+)s$", re.M)
CALLBACKS = Path(__file__).resolve().parent / "callbacks"


@dataclass
class Profiled:
    """One ansible-playbook run: wall seconds, the process, changed per host, seconds per role
    (profile_roles) and module runs per role (callbacks/apes_counts.py: remote, delegated, controller)."""

    seconds: float
    proc: subprocess.CompletedProcess
    changed: dict[str, int]
    roles: dict[str, float]
    counts: dict


def profiled_run(cmd: list[str], env: dict, cwd: Path | None = None) -> Profiled:
    """Run cmd with env plus the two callbacks that split its time and count its module runs."""
    with tempfile.NamedTemporaryFile(suffix=".json") as counts_file:
        full_env = dict(
            env,
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
            ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_roles,apes_counts",
            APES_COUNTS_FILE=counts_file.name,
        )
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - start
        text = Path(counts_file.name).read_text()
    return Profiled(
        seconds,
        proc,
        changed_per_host(proc.stdout),
        {m.group(1): float(m.group(2)) for m in _ROLE_TIME.finditer(proc.stdout)},
        json.loads(text) if text else {},
    )
