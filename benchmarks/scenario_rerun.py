#!/usr/bin/env python
"""Time an idempotent re-run of a Molecule scenario's converge, per role, with module-run counts.

Runs the scenario's converge.yml again against its running instances (Molecule's inventory and
ansible.cfg from this checkout's ephemeral directory), RUNS times, and prints for each run the wall
time, the changed count per host, the seconds per role (ansible.posix.profile_roles) and the module
runs on the hosts per role (benchmarks/callbacks/apes_counts.py; controller-only actions such as
set_fact or assert are not counted). Module runs do not depend on the machine's load; seconds do.

Usage (inside the tools' environment: source scripts/lib.sh; ensure_venv), after
`molecule converge -s SCENARIO`:
    benchmarks/scenario_rerun.py SCENARIO [--runs N] [--tags TAGS]
Nothing here asserts anything, and nothing is created or destroyed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from _recap import profiled_run
from molecule.text import checksum

PROJECT = Path(__file__).resolve().parent.parent


def ephemeral_dir(scenario: str) -> Path:
    """This checkout's Molecule directory for the scenario (inventory, ansible.cfg).

    Molecule names it after the project directory's name, so that checkouts (worktrees) of the
    same project do not share it: ~/.ansible/tmp/molecule.<checksum of the name>.<scenario>.
    """
    env = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if env:
        return Path(env)
    path = Path.home() / ".ansible" / "tmp" / f"molecule.{checksum(PROJECT.name, 4)}.{scenario}"
    if not (path / "inventory").exists():
        sys.exit(f"no Molecule inventory in {path} (molecule converge -s {scenario} first)")
    return path


def converge(scenario: str, tags: str | None) -> dict:
    ephemeral = ephemeral_dir(scenario)
    cmd = [
        "ansible-playbook",
        "-i",
        str(ephemeral / "inventory"),
        str(PROJECT / "molecule" / scenario / "converge.yml"),
    ]
    if tags:
        cmd += ["--tags", tags]
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ephemeral / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(PROJECT / ".collections"),
        ANSIBLE_ROLES_PATH=str(PROJECT / "roles"),
        MOLECULE_EPHEMERAL_DIRECTORY=str(ephemeral),
        MOLECULE_SCENARIO_DIRECTORY=str(PROJECT / "molecule" / scenario),
    )
    run = profiled_run(cmd, env, cwd=PROJECT)
    if run.proc.returncode != 0:
        sys.exit(f"converge failed:\n{run.proc.stdout[-3000:]}\n{run.proc.stderr[-2000:]}")
    return {"seconds": run.seconds, "changed": run.changed, "roles": run.roles, "counts": run.counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("--runs", type=int, default=3, help="re-runs (default 3)")
    parser.add_argument("--tags", help="run only these tags")
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared with other work)", flush=True)
    runs = []
    for number in range(1, args.runs + 1):
        run = converge(args.scenario, args.tags)
        runs.append(run)
        changes = ", ".join(f"{h}={n}" for h, n in sorted(run["changed"].items()))
        roles = ", ".join(f"{r} {s:.1f} s" for r, s in sorted(run["roles"].items(), key=lambda kv: -kv[1]))
        remote = run["counts"].get("remote", {})
        modules = ", ".join(f"{r} {n}" for r, n in sorted(remote.items(), key=lambda kv: -kv[1]))
        delegated = sum(run["counts"].get("delegated", {}).values())
        print(f"run {number}: {run['seconds']:.1f} s  changed: {changes}", flush=True)
        print(f"  by role (profile_roles): {roles}", flush=True)
        print(f"  module runs on the hosts: {sum(remote.values())} ({modules}); on the controller: {delegated}")
        print(f"  by action: {json.dumps(run['counts'].get('by_action', {}))}", flush=True)
    seconds = [r["seconds"] for r in runs]
    print(f"median {statistics.median(seconds):.1f} s (min {min(seconds):.1f}, max {max(seconds):.1f})")
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
