#!/usr/bin/env python
"""Time from an event to its alert firing at Alertmanager, on the local environment.

Runs against `scripts/local-env up` (default intervals: the collector scrapes every 30 s, Prometheus
scrapes and evaluates every 30 s), from this machine, through `docker exec`. Each case makes a real
fault, waits until Alertmanager holds the alert as active, repairs, and waits until it is resolved:

  backup   the freshness check of the pgBackRest repository with a maximum age of 1 s (BackupTooOld)
  replica  PostgreSQL stopped on the replica (PostgreSQLReplicaNotStreaming, `for: 1m`)

It also prints what Prometheus costs there: its resident memory, the series in its head block, the
samples it appends per second, and its data directory on disk.

Usage: python benchmarks/alert_latency.py [--runs N] [--case backup|replica ...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import time
from urllib.parse import quote

OBS, DB2, BACKUP = "apes-local-obs1", "apes-local-db2", "apes-local-backup1"
GET = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


def sh(container: str, command: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["docker", "exec", container, "bash", "-c", command], capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"{container}: {command}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def get(url: str):
    return json.loads(sh(OBS, f"python3 -c {shlex.quote(GET)} {shlex.quote(url)}"))


def active(name: str, host: str) -> bool:
    alerts = get("http://127.0.0.1:9093/api/v2/alerts?active=true&silenced=false&inhibited=false")
    return any(
        a["labels"].get("alertname") == name
        and a["labels"].get("host_name") == host
        and a["status"]["state"] == "active"
        for a in alerts
    )


def wait(predicate, what: str, timeout: float = 600) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(2)
    return time.monotonic() - start


def case_backup() -> tuple[float, float]:
    unit = "pgbackrest-backup-age-main.service"
    dropin = f"/run/systemd/system/{unit}.d"
    sh(
        BACKUP,
        f"mkdir -p {dropin} && printf '[Service]\\nEnvironment=BACKUP_MAX_AGE=1\\n' > {dropin}/bench.conf"
        " && systemctl daemon-reload",
    )
    start = time.monotonic()
    sh(BACKUP, f"systemctl start {unit}", check=False)  # fails: the newest backup is older than 1 s
    wait(lambda: active("BackupTooOld", "backup1"), "BackupTooOld")
    fired = time.monotonic() - start
    sh(BACKUP, f"rm -rf {dropin} && systemctl daemon-reload && systemctl reset-failed {unit}; systemctl start {unit}")
    resolved = wait(lambda: not active("BackupTooOld", "backup1"), "BackupTooOld resolved")
    return fired, resolved


def case_replica() -> tuple[float, float]:
    unit = sh(DB2, "systemctl list-units --plain --no-legend --type=service 'postgresql@*' | awk '{print $1}'")
    start = time.monotonic()
    sh(DB2, f"systemctl stop {unit}")
    try:
        wait(lambda: active("PostgreSQLReplicaNotStreaming", "db1"), "PostgreSQLReplicaNotStreaming")
        fired = time.monotonic() - start
    finally:
        sh(DB2, f"systemctl start {unit}")
    resolved = wait(
        lambda: not active("PostgreSQLReplicaNotStreaming", "db1"), "PostgreSQLReplicaNotStreaming resolved"
    )
    return fired, resolved


def query(expr: str) -> float:
    result = get(f"http://127.0.0.1:9090/api/v1/query?query={quote(expr)}")["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--case", action="append", choices=["backup", "replica"])
    args = parser.parse_args()
    cases = {"backup": case_backup, "replica": case_replica}
    for name in args.case or list(cases):
        runs = [cases[name]() for _attempt in range(args.runs)]
        fired, resolved = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"{name:8} event -> firing at Alertmanager: median {statistics.median(fired):6.1f} s,"
            f" max {max(fired):6.1f} s;"
            f" repair -> resolved: median {statistics.median(resolved):6.1f} s ({args.runs} run(s))"
        )
    rss = query('process_resident_memory_bytes{job="prometheus"}')
    series = query("prometheus_tsdb_head_series")
    rate = query("rate(prometheus_tsdb_head_samples_appended_total[5m])")
    disk = sh(OBS, "du -sb /var/lib/prometheus/metrics2 | cut -f1")
    uptime = time.time() - query('process_start_time_seconds{job="prometheus"}')
    print(
        f"prometheus: resident memory {rss / 2**20:.0f} MiB, head series {series:.0f}, "
        f"{rate:.1f} samples/s ({rate * 86400 / 1e6:.1f} million samples per day)"
    )
    print(
        f"prometheus: data directory {int(disk) / 2**20:.1f} MiB after {uptime / 60:.0f} min of uptime "
        "(WAL and head block; compacted blocks take about 1-2 bytes per sample)"
    )


if __name__ == "__main__":
    main()
