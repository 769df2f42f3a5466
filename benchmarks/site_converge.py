#!/usr/bin/env python
"""Time site.yml on the local environment: cold on fresh containers, then idempotent re-runs.

Cases (choose with --cases, default: cold idempotent tags installed):

  cold          playbooks/local_env_up.yml: new containers, then site.yml on them
  idempotent    site.yml again, RUNS times; goal: under 30 s with 0 changed
  docker_api    the same with the community.docker.docker_api connection instead of the docker CLI
  no_pipelining the same with ANSIBLE_PIPELINING=false, to show what the setting is worth
  tags          site.yml --tags <role> for each role (one role's share of a re-run)
  installed     apes.infra.site from the Galaxy artifact installed into a clean path, run from
                outside the checkout (no ansible.cfg of ours; roles by FQCN), once

Each line gives the wall time, the changed count per host, the time per role from the
ansible.posix.profile_roles callback, and the module runs on the hosts per role (counted by
benchmarks/callbacks/apes_counts.py; controller-only actions such as set_fact are not counted).
Nothing here asserts anything.

Usage (inside the tools' environment: source scripts/lib.sh; ensure_venv):
    benchmarks/site_converge.py [--runs N] [--cases cold idempotent ...] [--keep]
Without `cold`, the running local environment is reused; --keep leaves it running afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _recap import profiled_run

PROJECT = Path(__file__).resolve().parent.parent
INVENTORY = PROJECT / "inventories" / "local" / "hosts.yml"
ROLES = ["os_tuning", "docker", "postgresql", "pgbackrest", "redis", "otel_collector"]


class Run:
    def __init__(self, seconds: float, changed: dict[str, int], roles: dict[str, float], counts: dict):
        self.seconds, self.changed, self.roles, self.counts = seconds, changed, roles, counts


def playbook(
    path: str,
    env: dict | None = None,
    cwd: Path = PROJECT,
    clean_env: bool = False,
    extra: list[str] | None = None,
    inventory: Path = INVENTORY,
) -> Run:
    target = path if "/" not in path and not path.endswith(".yml") else str(PROJECT / path)
    cmd = ["ansible-playbook", "-i", str(inventory), target, *(extra or [])]
    base = {k: v for k, v in os.environ.items() if not (clean_env and k.startswith("ANSIBLE_"))}
    run = profiled_run(cmd, dict(base, **(env or {})), cwd=cwd)
    if run.proc.returncode != 0:
        sys.exit(f"{path} failed:\n{run.proc.stdout[-3000:]}\n{run.proc.stderr[-2000:]}")
    return Run(run.seconds, run.changed, run.roles, run.counts)


def line(label: str, runs: list[Run]) -> None:
    seconds = [r.seconds for r in runs]
    figure = f"{seconds[0]:6.1f} s" if len(seconds) == 1 else f"{statistics.median(seconds):6.1f} s median"
    spread = "" if len(seconds) == 1 else f"  (min {min(seconds):.1f}, max {max(seconds):.1f}, {len(seconds)} runs)"
    hosts = sorted({h for r in runs for h in r.changed})
    total = sum(max(r.changed.get(h, 0) for r in runs) for h in hosts)
    per_host = ", ".join(f"{h}={max(r.changed.get(h, 0) for r in runs)}" for h in hosts if h != "localhost")
    print(f"{label:<14} {figure}{spread}  changed: {total} ({per_host})", flush=True)
    last = runs[-1]
    if last.roles:
        split = ", ".join(f"{role} {secs:.1f} s" for role, secs in sorted(last.roles.items(), key=lambda kv: -kv[1]))
        print(f"{'':<14} by role (profile_roles, last run): {split}", flush=True)
    remote = last.counts.get("remote", {})
    if remote:
        split = ", ".join(f"{role} {n}" for role, n in sorted(remote.items(), key=lambda kv: -kv[1]))
        delegated = sum(last.counts.get("delegated", {}).values())
        print(
            f"{'':<14} module runs on hosts: {sum(remote.values())} ({split}); on the controller: {delegated}",
            flush=True,
        )


def installed(runs: int) -> list[Run]:
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
        return [playbook("apes.infra.site", settings, cwd=Path(tmp), clean_env=True) for _run in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="idempotent runs per case (default 3)")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["cold", "idempotent", "tags", "installed"],
        choices=["cold", "idempotent", "docker_api", "no_pipelining", "tags", "installed"],
    )
    parser.add_argument("--keep", action="store_true", help="leave the local environment running")
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared with other work)", flush=True)
    try:
        if "cold" in args.cases:
            playbook("playbooks/local_env_down.yml")
            line("cold", [playbook("playbooks/local_env_up.yml")])
        if "idempotent" in args.cases:
            line("idempotent", [playbook("site.yml") for _run in range(args.runs)])
        if "docker_api" in args.cases:
            # -e wins over the inventory's ansible_connection: the same run over the Docker API.
            api = ["-e", "ansible_connection=community.docker.docker_api"]
            line("docker_api", [playbook("site.yml", extra=api) for _run in range(args.runs)])
        if "no_pipelining" in args.cases:
            line("no pipelining", [playbook("site.yml", {"ANSIBLE_PIPELINING": "false"}) for _run in range(args.runs)])
        if "tags" in args.cases:
            for role in ROLES:
                line(f"tags {role}", [playbook("site.yml", {"ANSIBLE_RUN_TAGS": role}) for _run in range(args.runs)])
        if "installed" in args.cases:
            line("installed", installed(1))
    finally:
        print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
        if not args.keep:
            playbook("playbooks/local_env_down.yml")


if __name__ == "__main__":
    main()
