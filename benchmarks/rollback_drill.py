#!/usr/bin/env python
"""Rollback drill on the local environment: how long until the previous state is live again.

1. A change is applied with site.yml: a PostgreSQL setting that needs a restart
   (`shared_buffers`, through postgresql_settings) and one more Redis ACL user (redis_users).
   The script checks that both are live (SHOW shared_buffers on the primary, ACL GETUSER on every
   Redis server).
2. The previous inventory is re-applied (site.yml without the change). The clock runs from the start
   of that run until the previous state is live everywhere: shared_buffers back to its old value on
   the primary and the replica, the extra ACL user gone from every Redis server, the applications'
   users still working.

It prints the time of each step, for the whole site.yml and (second round) for `--tags
postgresql,redis`, the way an operator in a hurry would run it. Goal: under 2 minutes. Nothing here
asserts anything beyond reporting what it saw; the figures go to the closing note.

Usage (inside the tools' environment, with the local environment up: scripts/local-env up):
    benchmarks/rollback_drill.py
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

from site_converge import INVENTORY, PROJECT

SECRETS = INVENTORY.parent / ".secrets"
CHANGE = {
    "postgresql_settings": {"shared_buffers": "192MB"},
    "redis_users": [
        {"name": "app", "password": "{{ local_env_app_redis_password }}", "keys": ["app:*"]},
        {"name": "rollback_probe", "password": "rollback-probe-password-1", "keys": ["probe:*"]},
    ],
}


def site(extra_vars: dict | None, tags: str | None) -> float:
    cmd = ["ansible-playbook", "-i", str(INVENTORY), str(PROJECT / "site.yml")]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
        if extra_vars:
            json.dump(extra_vars, fh)
            fh.flush()
            cmd += ["-e", f"@{fh.name}"]
        if tags:
            cmd += ["--tags", tags]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"site.yml failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def docker_exec(container: str, *argv: str, env: dict | None = None) -> str:
    options = [item for k, v in (env or {}).items() for item in ("-e", f"{k}={v}")]
    return subprocess.run(
        ["docker", "exec", *options, container, *argv], capture_output=True, text=True, check=False
    ).stdout.strip()


def shared_buffers(container: str) -> str:
    return docker_exec(container, "runuser", "-u", "postgres", "--", "psql", "-Atqc", "SHOW shared_buffers")


def has_probe_user(container: str) -> bool:
    password = (SECRETS / "redis_admin").read_text().split()[0]
    out = docker_exec(
        container, "redis-cli", "--user", "admin", "ACL", "GETUSER", "rollback_probe", env={"REDISCLI_AUTH": password}
    )
    return out not in ("", "(nil)")


def main() -> None:
    os.chdir(PROJECT)
    databases = ["apes-local-db1", "apes-local-db2"]
    caches = ["apes-local-cache1", "apes-local-cache2"]
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    before = {c: shared_buffers(c) for c in databases}
    print(f"previous state: shared_buffers {before}, rollback_probe user absent", flush=True)
    for tags in (None, "postgresql,redis"):
        label = "site.yml" if tags is None else f"--tags {tags}"
        applied = site(CHANGE, tags)
        state = {c: shared_buffers(c) for c in databases}
        users = {c: has_probe_user(c) for c in caches}
        print(f"[{label}] change applied in {applied:.1f} s: shared_buffers {state}, probe user {users}", flush=True)
        start = time.monotonic()
        site(None, tags)
        run = time.monotonic() - start
        # The run is done; poll until every host shows the previous state (the replica's restart
        # may lag the playbook by a moment).
        while True:
            live = {c: shared_buffers(c) for c in databases}
            users = {c: has_probe_user(c) for c in caches}
            if live == before and not any(users.values()):
                break
            if time.monotonic() - start > 600:
                print(f"[{label}] previous state NOT live after 600 s: {live}, probe user {users}", flush=True)
                return
            time.sleep(1)
        total = time.monotonic() - start
        print(f"[{label}] rollback: playbook {run:.1f} s, previous state live after {total:.1f} s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
