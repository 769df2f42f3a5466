#!/usr/bin/env python
"""Cold converge and idempotent re-run of the `postgresql` scenario, with PostgreSQL's restarts counted.

For each trial: a fresh container (molecule destroy + create of the `postgresql` scenario), then
the scenario's converge.yml (os_tuning, then postgresql with TLS, tuning, roles, databases, initial
SQL, monitoring) timed with ansible-playbook against one instance, then the same playbook again
(idempotent: it must report changed=0). After each run the server log tells how often PostgreSQL
started ("database system is ready to accept connections") and stopped ("received fast shutdown
request"): a cold converge should start it once and stop it never; a re-run neither. The re-run
is also split by role (ansible.posix.profile_roles) and its module runs on the host are counted
(benchmarks/callbacks/apes_counts.py; this count does not depend on the machine's load).

It destroys and re-creates the scenario's containers: do not run it while `scripts/test postgresql` runs.
Run from the checkout, with the tools' environment active (scripts/bootstrap; source <venv>/bin/activate):
    python benchmarks/postgresql_converge.py [TRIALS] [INSTANCE]
TRIALS defaults to 3, INSTANCE to apes-postgresql-debian12 (PostgreSQL 15, 2 GiB). Prints one table;
nothing here asserts anything. The figures depend on the machine's load (other containers running).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _recap import profiled_run

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = "postgresql"
TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
INSTANCE = sys.argv[2] if len(sys.argv) > 2 else "apes-postgresql-debian12"
VERSION = {"apes-postgresql-debian12": "15", "apes-postgresql-debian13": "17"}[INSTANCE]


def run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def inventory(directory: Path) -> str:
    """An inventory with the instance in the scenario's groups (as Molecule's would have it)."""
    path = directory / "hosts.yml"
    path.write_text(
        "postgresql:\n  children:\n    postgresql_primary:\n      hosts:\n"
        f"        {INSTANCE}:\n          ansible_connection: community.docker.docker\n"
    )
    return str(path)


def converge(inv: str) -> tuple[float, str, dict, dict]:
    """One run: seconds, output, seconds per role, module runs on the host per role."""
    env = dict(
        os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")
    )
    cmd = ["ansible-playbook", "-i", inv, "--limit", INSTANCE, str(ROOT / "molecule" / SCENARIO / "converge.yml")]
    result = profiled_run(cmd, env, cwd=ROOT)
    if result.proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.proc.stdout[-3000:]}\n{result.proc.stderr[-3000:]}")
    return result.seconds, result.proc.stdout, result.roles, result.counts.get("remote", {})


def log_counts() -> tuple[int, int]:
    log = subprocess.run(
        ["docker", "exec", INSTANCE, "cat", f"/var/log/postgresql/postgresql-{VERSION}-main.log"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return log.count("database system is ready to accept connections"), log.count("received fast shutdown request")


def changed(out: str) -> int:
    match = re.search(rf"^{re.escape(INSTANCE)}\s*:.*changed=(\d+)", out, re.M)
    return int(match.group(1)) if match else -1


def main() -> None:
    rows = []
    for trial in range(1, TRIALS + 1):
        run(["molecule", "destroy", "-s", SCENARIO])
        run(["molecule", "create", "-s", SCENARIO])
        inv = inventory(Path(tempfile.mkdtemp(prefix="apes-pg-bench-")))
        cold, out, _roles, _counts = converge(inv)
        starts_cold, stops_cold = log_counts()
        cold_changed = changed(out)
        again, out, roles, counts = converge(inv)
        starts, stops = log_counts()
        rerun = (again, changed(out), starts - starts_cold, roles, counts)
        rows.append((trial, cold, cold_changed, starts_cold, stops_cold, *rerun))
        print(f"trial {trial}: cold {cold:.1f}s, re-run {again:.1f}s", file=sys.stderr, flush=True)

    print(f"\n{INSTANCE} (PostgreSQL {VERSION}), {TRIALS} trial(s), load average {os.getloadavg()[0]:.1f}")
    print(
        "| trial | cold converge | changed | PG starts | PG stops | re-run | changed | PG starts in re-run "
        "| re-run: postgresql role | re-run: module runs (postgresql) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for trial, cold, cc, sc, st, again, ac, sa, roles, counts in rows:
        print(
            f"| {trial} | {cold:.1f} s | {cc} | {sc} | {st} | {again:.1f} s | {ac} | {sa} "
            f"| {roles.get('postgresql', 0):.1f} s | {counts.get('postgresql', '?')} |"
        )
    print(
        f"| median | {statistics.median(r[1] for r in rows):.1f} s | | | | "
        f"{statistics.median(r[5] for r in rows):.1f} s | | | "
        f"{statistics.median(r[8].get('postgresql', 0) for r in rows):.1f} s | |"
    )


if __name__ == "__main__":
    main()
