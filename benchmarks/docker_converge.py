#!/usr/bin/env python
"""Time the `docker` Molecule scenario's converge: cold on fresh containers, then idempotent re-runs.

Recreates the scenario's two containers (Debian 12 and 13: `molecule destroy`, `create`, `prepare`),
then runs the scenario's converge.yml (os_tuning, then docker) with Molecule's inventory and Ansible
settings and prints one line per run:

  cold          first converge: packages, daemon.json, first start of dockerd, users, prune timer
  idempotent    the same converge again (RUNS times; the role's goal: under 5 s with 0 changed)
  docker only   the same converge limited to the docker role's tasks (--tags docker)

Each line also gives the seconds per role (ansible.posix.profile_roles) and the module runs on the
hosts per role (benchmarks/callbacks/apes_counts.py), which do not depend on the machine's load.

Usage (inside the tools' environment: source scripts/lib.sh; ensure_venv):
    benchmarks/docker_converge.py [--runs N] [--keep]
--keep leaves the containers running afterwards (default: `molecule destroy`). Package downloads go
through the test machine's apt cache; nothing else leaves this machine. Nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from pathlib import Path

import scenario_rerun

PROJECT = Path(__file__).resolve().parent.parent
SCENARIO = "docker"


def molecule(action: str) -> None:
    subprocess.run(["molecule", action, "-s", SCENARIO], cwd=PROJECT, check=True, capture_output=True)


def converge(tags: str | None = None) -> dict:
    return scenario_rerun.converge(SCENARIO, tags)


def line(label: str, runs: list[dict]) -> None:
    seconds = [r["seconds"] for r in runs]
    figure = f"{seconds[0]:6.1f} s" if len(seconds) == 1 else f"{statistics.median(seconds):6.1f} s median"
    spread = "" if len(seconds) == 1 else f"  (min {min(seconds):.1f}, max {max(seconds):.1f}, {len(seconds)} runs)"
    hosts = sorted({h for r in runs for h in r["changed"]})
    changes = ", ".join(f"{h} changed={max(r['changed'].get(h, 0) for r in runs)}" for h in hosts)
    print(f"{label:<12} {figure}{spread}  {changes}", flush=True)
    last = runs[-1]
    roles = ", ".join(f"{role} {secs:.1f} s" for role, secs in sorted(last["roles"].items(), key=lambda kv: -kv[1]))
    remote = last["counts"].get("remote", {})
    modules = ", ".join(f"{role} {n}" for role, n in sorted(remote.items(), key=lambda kv: -kv[1]))
    print(f"{'':<12} by role (last run): {roles}; module runs on the hosts: {sum(remote.values())} ({modules})")


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
        line("cold", [converge()])
        line("idempotent", [converge() for _run in range(args.runs)])
        line("docker only", [converge("docker") for _run in range(args.runs)])
    finally:
        print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
        if not args.keep:
            molecule("destroy")


if __name__ == "__main__":
    main()
