#!/usr/bin/env python
"""Stock against tuned PostgreSQL on the same container, interleaved: what apes.infra.pg_tune buys.

Uses a converged instance of the `postgresql` Molecule scenario (default apes-postgresql-debian12:
2 GiB memory limit, 1 CPU). The two configurations differ only by the settings pg_tune computed:

  A stock:  the role's drop-in without its "Computed by apes.infra.pg_tune" section (so SCRAM, TLS,
            pg_stat_statements and the user settings stay; every tuned parameter is back at
            PostgreSQL's default);
  B tuned:  the drop-in as the role wrote it.

Each round restarts PostgreSQL with A, runs every workload, then does the same with B (A B A B ...):

  (a) pgbench at scale 10 (fits in memory either way): select-only (-S) and read-write (TPC-B),
      4 clients, DURATION seconds each;
  (b) the work tuning exists for: bulk load `pgbench -i -s SCALE` (COPY, vacuum, primary key) into a
      new database, a secondary index build on pgbench_accounts, and a sort- and hash-heavy reporting
      query over it.

Prints per-round figures, then medians and tuned/stock ratios (TPS: higher is better, so the ratio
is tuned/stock; times: the ratio is stock/tuned, so above 1 means tuned is faster). Nothing here
asserts anything. Other containers on the machine add noise: the load average is printed.

Run (about 25 minutes with the defaults on a quiet 2-core machine):
    molecule create -s postgresql && molecule converge -s postgresql
    python benchmarks/postgresql_tuning.py [ROUNDS] [SCALE] [DURATION] [INSTANCE]
"""

from __future__ import annotations

import os
import re
import shlex
import statistics
import subprocess
import sys
import time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
SCALE = int(sys.argv[2]) if len(sys.argv) > 2 else 100
DURATION = int(sys.argv[3]) if len(sys.argv) > 3 else 20
INSTANCE = sys.argv[4] if len(sys.argv) > 4 else "apes-postgresql-debian12"
VERSION = {"apes-postgresql-debian12": "15", "apes-postgresql-debian13": "17"}[INSTANCE]
CONF = f"/etc/postgresql/{VERSION}/main/conf.d/50-apes-infra.conf"
SAVED = f"/var/lib/postgresql/{VERSION}-50-apes-infra.conf.tuned"
STOCK_AWK = "/^# Computed by apes.infra.pg_tune/{skip=1} /^# apes.infra.postgresql$/{skip=0} !skip"
REPORT_QUERY = (
    "SELECT a.bid, a.aid % 1000 AS bucket, count(*), sum(a.abalance + b.bbalance), count(DISTINCT a.aid % 77777)"
    " FROM pgbench_accounts a JOIN pgbench_branches b USING (bid)"
    " GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 20"
)


def sh(script: str, user: str = "root") -> str:
    cmd = ["docker", "exec", "-u", user, INSTANCE, "bash", "-c", script]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{script}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout.strip()


def psql(sql: str, db: str = "postgres") -> str:
    return sh(f"psql -X -Atq -d {db} -c {shlex.quote(sql)}", user="postgres")


def timed(script: str, user: str = "postgres") -> float:
    start = time.monotonic()
    sh(script, user)
    return time.monotonic() - start


def use(config: str) -> None:
    """Install the stock or tuned drop-in and restart PostgreSQL with it."""
    if config == "tuned":
        sh(f"cp {SAVED} {CONF}")
    else:
        # Drop the computed section: from its heading to the role's own section.
        sh(f"awk {shlex.quote(STOCK_AWK)} {SAVED} > {CONF}")
    sh(f"chown postgres:postgres {CONF} && systemctl restart postgresql@{VERSION}-main")
    while psql("SELECT 1") != "1":
        time.sleep(0.2)


def tps(args: str) -> float:
    out = sh(f"pgbench -n {args} -c 4 -j 2 -T {DURATION} bench_oltp", user="postgres")
    return float(re.search(r"tps = ([0-9.]+)", out).group(1))


def round_for(config: str) -> dict[str, float]:
    use(config)
    result = {"pgbench -S (TPS)": tps("-S"), "pgbench read-write (TPS)": tps("")}
    psql("DROP DATABASE IF EXISTS bench_bulk")
    psql("CREATE DATABASE bench_bulk")
    result[f"bulk load pgbench -i -s {SCALE} (s)"] = timed(f"pgbench -i -q -s {SCALE} bench_bulk")
    result["index build (s)"] = timed(
        "psql -X -q -d bench_bulk -c 'CREATE INDEX accounts_bid_abalance ON pgbench_accounts (bid, abalance, aid)'"
    )
    result["reporting query (s)"] = timed(f"psql -X -q -o /dev/null -d bench_bulk -c {shlex.quote(REPORT_QUERY)}")
    return result


def main() -> None:
    if not sh(f"test -f {SAVED} && echo yes || true"):
        sh(f"cp {CONF} {SAVED}")
    tuned = sh(f"sed -n '/^# Computed by apes.infra.pg_tune/,/^# apes.infra.postgresql$/p' {SAVED}")
    psql("DROP DATABASE IF EXISTS bench_oltp")
    psql("CREATE DATABASE bench_oltp")
    sh("pgbench -i -q -s 10 bench_oltp", user="postgres")
    runs: dict[str, list[dict[str, float]]] = {"stock": [], "tuned": []}
    loads = []
    try:
        for number in range(1, ROUNDS + 1):
            for config in ("stock", "tuned"):
                loads.append(os.getloadavg()[0])
                runs[config].append(round_for(config))
                print(f"round {number} {config}: {runs[config][-1]}", file=sys.stderr, flush=True)
    finally:
        use("tuned")
        sh(f"rm -f {SAVED}")
        psql("DROP DATABASE IF EXISTS bench_bulk")
        psql("DROP DATABASE IF EXISTS bench_oltp")

    print(f"\n{INSTANCE} (PostgreSQL {VERSION}), {ROUNDS} interleaved rounds, scale {SCALE}, {DURATION} s runs")
    print(f"load average during the runs: {min(loads):.1f} to {max(loads):.1f} (2 cores)")
    print(
        "tuned settings: " + ", ".join(line for line in tuned.splitlines() if line.strip() and not line.startswith("#"))
    )
    print(
        "\n| measure | "
        + " | ".join(f"stock {i}" for i in range(1, ROUNDS + 1))
        + " | "
        + " | ".join(f"tuned {i}" for i in range(1, ROUNDS + 1))
        + " | stock median | tuned median | ratio |"
    )
    print("|---" * (2 * ROUNDS + 4) + "|")
    for measure in runs["stock"][0]:
        stock = [r[measure] for r in runs["stock"]]
        tuned_values = [r[measure] for r in runs["tuned"]]
        s_med, t_med = statistics.median(stock), statistics.median(tuned_values)
        ratio = t_med / s_med if "TPS" in measure else s_med / t_med
        cells = " | ".join(f"{v:.1f}" for v in stock + tuned_values)
        print(f"| {measure} | {cells} | {s_med:.1f} | {t_med:.1f} | {ratio:.2f}x |")
    print("\nratio: tuned/stock for TPS, stock/tuned for times (above 1 = tuned better)")


if __name__ == "__main__":
    main()
