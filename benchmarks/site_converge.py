#!/usr/bin/env python
"""Time site.yml on the local environment: cold on fresh containers, then idempotent re-runs.

Removes the local environment (`playbooks/local_env_down.yml`; its secrets stay), then:

  cold          playbooks/local_env_up.yml: six new containers, then site.yml on them
  idempotent    site.yml again, RUNS times, with the repository's ansible.cfg (pipelining on,
                facts gathered only where a role needs them); goal: under 30 s with 0 changed
  no pipelining the same with ANSIBLE_PIPELINING=false, to show what the setting is worth
  tags redis    site.yml --tags redis (one role's share of a re-run)
  installed     apes.infra.site from the Galaxy artifact installed into a clean path, run from
                outside the checkout (no ansible.cfg of ours; roles by FQCN), once

Each line gives the wall time and the changed count per host. Nothing here asserts anything.

Usage (inside the tools' environment: source scripts/lib.sh; ensure_venv):
    benchmarks/site_converge.py [--runs N] [--no-cold] [--keep]
--no-cold reuses the running local environment; --keep leaves it running afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _recap import changed_per_host

PROJECT = Path(__file__).resolve().parent.parent
INVENTORY = PROJECT / "inventories" / "local" / "hosts.yml"


def playbook(
    path: str, env: dict | None = None, cwd: Path = PROJECT, clean_env: bool = False
) -> tuple[float, dict[str, int]]:
    target = path if "/" not in path and not path.endswith(".yml") else str(PROJECT / path)
    cmd = ["ansible-playbook", "-i", str(INVENTORY), target]
    base = {k: v for k, v in os.environ.items() if not (clean_env and k.startswith("ANSIBLE_"))}
    full_env = dict(base, ANSIBLE_NOCOLOR="1", **(env or {}))
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{path} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, changed_per_host(proc.stdout)


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
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                ["ansible-galaxy", "collection", "build", "--output-path", tmp],
                cwd=PROJECT,
                check=True,
                capture_output=True,
            )
            artifact = next(Path(tmp).glob("apes-infra-*.tar.gz"))
            subprocess.run(
                ["ansible-galaxy", "collection", "install", "--no-deps", "-p", f"{tmp}/collections", str(artifact)],
                cwd=tmp,
                check=True,
                capture_output=True,
            )
            print(f"installed copy: {artifact.name} in {tmp}/collections", flush=True)
            settings = {
                "ANSIBLE_COLLECTIONS_PATH": f"{tmp}/collections",
                "ANSIBLE_PIPELINING": "true",
                "ANSIBLE_FORKS": "20",
            }
            line("installed", [playbook("apes.infra.site", settings, cwd=Path(tmp), clean_env=True)])
    finally:
        print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
        if not args.keep:
            playbook("playbooks/local_env_down.yml")


if __name__ == "__main__":
    main()
