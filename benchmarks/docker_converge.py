#!/usr/bin/env python
"""Time the `docker` Molecule scenario's converge: cold on fresh containers, then idempotent re-runs.

Recreates the scenario's two containers (Debian 12 and 13: `molecule destroy`, `create`, `prepare`),
then runs the scenario's converge.yml (os_tuning, then docker) with Molecule's inventory and Ansible
settings and prints one line per run:

  cold          first converge: packages, daemon.json, first start of dockerd, users, prune timer
  idempotent    the same converge again (RUNS times; the role's goal: under 5 s with 0 changed)
  docker only   the same converge limited to the docker role's tasks (--tags docker)

Usage (inside the tools' environment: source scripts/lib.sh; ensure_venv):
    benchmarks/docker_converge.py [--runs N] [--keep]
--keep leaves the containers running afterwards (default: `molecule destroy`). Package downloads go
through the test machine's apt cache; nothing else leaves this machine. Nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _recap import changed_per_host

PROJECT = Path(__file__).resolve().parent.parent
SCENARIO = "docker"


def molecule(action: str) -> None:
    subprocess.run(["molecule", action, "-s", SCENARIO], cwd=PROJECT, check=True, capture_output=True)


def ephemeral_dir() -> Path:
    """Molecule's per-scenario directory (inventory and ansible.cfg for this project)."""
    env = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if env:
        return Path(env)
    candidates = sorted(
        glob.glob(os.path.expanduser(f"~/.ansible/tmp/molecule.*.{SCENARIO}/inventory")), key=os.path.getmtime
    )
    if not candidates:
        sys.exit("no Molecule inventory found for the docker scenario (molecule create -s docker)")
    return Path(candidates[-1]).parent


def converge(tags: str | None = None) -> tuple[float, dict[str, int]]:
    ephemeral = ephemeral_dir()
    cmd = [
        "ansible-playbook",
        "-i",
        str(ephemeral / "inventory"),
        str(PROJECT / "molecule" / SCENARIO / "converge.yml"),
    ]
    if tags:
        cmd += ["--tags", tags]
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ephemeral / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(PROJECT / ".collections"),
        ANSIBLE_ROLES_PATH=str(PROJECT / "roles"),
        ANSIBLE_NOCOLOR="1",
    )
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"converge failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, changed_per_host(proc.stdout)


def line(label: str, seconds: list[float], changed: dict[str, int]) -> None:
    figure = f"{seconds[0]:6.1f} s" if len(seconds) == 1 else f"{statistics.median(seconds):6.1f} s median"
    spread = "" if len(seconds) == 1 else f"  (min {min(seconds):.1f}, max {max(seconds):.1f}, {len(seconds)} runs)"
    changes = ", ".join(f"{host} changed={n}" for host, n in sorted(changed.items()))
    print(f"{label:<12} {figure}{spread}  {changes}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="idempotent runs per case (default 3)")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared with other work)", flush=True)
    molecule("destroy")
    molecule("create")
    molecule("prepare")
    try:
        seconds, changed = converge()
        line("cold", [seconds], changed)
        runs = [converge() for _run in range(args.runs)]
        line("idempotent", [s for s, _changed in runs], {h: max(r[1][h] for r in runs) for h in runs[0][1]})
        runs = [converge("docker") for _run in range(args.runs)]
        line("docker only", [s for s, _changed in runs], {h: max(r[1][h] for r in runs) for h in runs[0][1]})
    finally:
        print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
        if not args.keep:
            molecule("destroy")


if __name__ == "__main__":
    main()
