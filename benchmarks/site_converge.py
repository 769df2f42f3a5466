#!/usr/bin/env python
"""Time site.yml on the local environment: cold on fresh containers, then idempotent re-runs.

Removes the local environment (`playbooks/local_env_down.yml`; its secrets stay), then:

  cold          playbooks/local_env_up.yml: six new containers, then site.yml on them
  idempotent    site.yml again, RUNS times, with the repository's ansible.cfg (pipelining on,
                facts gathered only where a role needs them); goal: under 30 s with 0 changed
  no pipelining the same with ANSIBLE_PIPELINING=false, to show what the setting is worth
  tags redis    site.yml --tags redis (one role's share of a re-run)

Each line gives the wall time and the changed count per host. Nothing here asserts anything.

Usage (inside the tools' environment: source scripts/lib.sh; ensure_venv):
    benchmarks/site_converge.py [--runs N] [--no-cold] [--keep]
--no-cold reuses the running local environment; --keep leaves it running afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
INVENTORY = PROJECT / "inventories" / "local" / "hosts.yml"


def playbook(path: str, env: dict | None = None) -> tuple[float, dict[str, int]]:
    cmd = ["ansible-playbook", "-i", str(INVENTORY), str(PROJECT / path)]
    full_env = dict(os.environ, ANSIBLE_NOCOLOR="1", **(env or {}))
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=PROJECT, env=full_env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{path} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    changed = {
        m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)
    }
    return elapsed, changed


def line(label: str, runs: list[tuple[float, dict[str, int]]]) -> None:
    seconds = [s for s, _c in runs]
    figure = f"{seconds[0]:6.1f} s" if len(seconds) == 1 else f"{statistics.median(seconds):6.1f} s median"
    spread = "" if len(seconds) == 1 else f"  (min {min(seconds):.1f}, max {max(seconds):.1f}, {len(seconds)} runs)"
    hosts = sorted({h for _s, c in runs for h in c})
    total = sum(max(c.get(h, 0) for _s, c in runs) for h in hosts)
    per_host = ", ".join(f"{h}={max(c.get(h, 0) for _s, c in runs)}" for h in hosts if h != "localhost")
    print(f"{label:<14} {figure}{spread}  changed: {total} ({per_host})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="idempotent runs per case (default 3)")
    parser.add_argument("--no-cold", action="store_true", help="reuse the running local environment")
    parser.add_argument("--keep", action="store_true", help="leave the local environment running")
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared with other work)", flush=True)
    try:
        if not args.no_cold:
            playbook("playbooks/local_env_down.yml")
            line("cold", [playbook("playbooks/local_env_up.yml")])
        line("idempotent", [playbook("site.yml") for _run in range(args.runs)])
        line("no pipelining", [playbook("site.yml", {"ANSIBLE_PIPELINING": "false"}) for _run in range(args.runs)])
        line("tags redis", [playbook("site.yml", {"ANSIBLE_RUN_TAGS": "redis"}) for _run in range(args.runs)])
    finally:
        print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
        if not args.keep:
            playbook("playbooks/local_env_down.yml")


if __name__ == "__main__":
    main()
