#!/usr/bin/env python
"""Backup and restore speed: pgBackRest (off-host, encrypted repository) against pg_dump/pg_restore.

Uses the `pgbackrest` Molecule scenario's two containers (a database host and a repository host on
one Docker network), converged with the role's defaults. Builds a database of about SIZE_MB of
incompressible data (random bytea), then times on the same hosts:

  * pg_dump -Fc to a file on the database host, and pg_restore of it into a new database;
  * pgBackRest full backups with several compression/parallelism settings (the role's default is
    lz4 with process-max 2: this is the measurement behind that choice);
  * pgBackRest restore into a new data directory, plus recovery until the server accepts queries;
  * a point-in-time restore to a timestamp inside the WAL written after the backup.

Run (takes several minutes, needs about 5 GB of disk):
    scripts/bootstrap && source <venv>/bin/activate
    molecule create -s pgbackrest && molecule prepare -s pgbackrest && molecule converge -s pgbackrest
    python benchmarks/pgbackrest_backup.py [SIZE_MB]
Prints one table; nothing here asserts anything.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

DB = "apes-pgbackrest-db"
REPO = "apes-pgbackrest-repo"
SIZE_MB = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
ROWS = SIZE_MB * 1024  # 1 KiB of random bytes per row
FILL_SQL = "INSERT INTO bench SELECT g, gen_random_bytes(1024) FROM generate_series(:first, :last) g;"


def sh(container: str, script: str, user: str = "root") -> str:
    cmd = ["docker", "exec", "-u", user, container, "bash", "-c", script]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{container}: {script}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip()


def timed(container: str, script: str, user: str = "root") -> float:
    start = time.monotonic()
    sh(container, script, user)
    return time.monotonic() - start


def psql(sql: str, port: int = 5432, db: str = "postgres") -> str:
    return sh(DB, f'psql -p {port} -d {db} -Atqc "{sql}"', user="postgres")


def pg_bin() -> str:
    version = sh(DB, "pg_lsclusters -h | awk '{print $1; exit}'")
    return f"/usr/lib/postgresql/{version}/bin"


def build_dataset() -> None:
    psql("CREATE EXTENSION IF NOT EXISTS pgcrypto")
    psql("DROP TABLE IF EXISTS bench")
    psql("CREATE TABLE bench (id bigint PRIMARY KEY, payload bytea) WITH (toast_tuple_target = 8160)")
    psql("ALTER TABLE bench ALTER COLUMN payload SET STORAGE EXTERNAL")
    step = 65536
    for first in range(1, ROWS + 1, step):
        last = min(first + step - 1, ROWS)
        sh(
            DB,
            f"psql -v ON_ERROR_STOP=1 -v first={first} -v last={last} -Atq <<'SQL'\n{FILL_SQL}\nSQL",
            user="postgres",
        )
    psql("CHECKPOINT")


def start_restored(bin_dir: str, datadir: str, port: int) -> None:
    sh(
        DB,
        f"printf \"port = {port}\\nlisten_addresses = ''\\nunix_socket_directories = '/var/run/postgresql'\\n"
        f"archive_mode = off\\nhba_file = '{datadir}/pg_hba.conf'\\nident_file = '{datadir}/pg_ident.conf'\\n\" "
        f"> {datadir}/postgresql.conf && echo 'local all all peer' > {datadir}/pg_hba.conf"
        f" && : > {datadir}/pg_ident.conf"
        f" && {bin_dir}/pg_ctl -D {datadir} -l {datadir}/log -w -t 3600 start",
        user="postgres",
    )
    while psql("SELECT pg_is_in_recovery()", port=port) != "f":
        time.sleep(0.2)


def stop_and_remove(bin_dir: str, datadir: str) -> None:
    sh(DB, f"{bin_dir}/pg_ctl -D {datadir} -m immediate -w stop || true; rm -rf {datadir}", user="postgres")


def main() -> None:
    bin_dir = pg_bin()
    print(f"building {SIZE_MB} MB of random bytea ...", flush=True)
    build_dataset()
    size = psql("SELECT pg_size_pretty(pg_database_size('postgres'))")
    results: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        results.setdefault(name, []).append(seconds)
        print(f"  {name:<48} {seconds:7.1f} s", flush=True)

    # pg_dump / pg_restore on the database host itself.
    sh(DB, "rm -f /var/tmp/bench.dump")
    record("pg_dump -Fc", timed(DB, "pg_dump -Fc -f /var/tmp/bench.dump postgres", user="postgres"))
    psql("DROP DATABASE IF EXISTS restored")
    psql("CREATE DATABASE restored")
    record(
        "pg_restore (to a queryable database)", timed(DB, "pg_restore -d restored /var/tmp/bench.dump", user="postgres")
    )
    psql("DROP DATABASE restored")
    sh(DB, "rm -f /var/tmp/bench.dump")

    # pgBackRest full backups from the repository host, with several settings.
    variants = [
        ("gz, 1 process", "gz", 1),
        ("lz4, 1 process", "lz4", 1),
        ("lz4, 2 processes (role default)", "lz4", 2),
        ("zst, 2 processes", "zst", 2),
    ]
    for label, compress, processes in variants:
        seconds = timed(
            REPO,
            f"pgbackrest --stanza=main --type=full --compress-type={compress} --process-max={processes} backup",
            user="pgbackrest",
        )
        record(f"pgBackRest full backup, {label}", seconds)

    # Restore the newest backup (lz4/2 is not the newest: take one more with the defaults).
    record(
        "pgBackRest full backup, defaults again",
        timed(REPO, "pgbackrest --stanza=main --type=full backup", user="pgbackrest"),
    )
    for attempt in range(2):
        datadir = f"/var/lib/postgresql/bench-restore-{attempt}"
        stop_and_remove(bin_dir, datadir)
        start = time.monotonic()
        sh(
            DB,
            f"mkdir -p {datadir} && chmod 700 {datadir} && pgbackrest --stanza=main --pg1-path={datadir} "
            "--archive-mode=off restore",
            user="postgres",
        )
        files = time.monotonic() - start
        start_restored(bin_dir, datadir, 5490 + attempt)
        total = time.monotonic() - start
        record("pgBackRest restore: files", files)
        record("pgBackRest restore: files + recovery, queryable", total)
        stop_and_remove(bin_dir, datadir)

    # Point in time: write after the backup, restore to a moment in between.
    psql("CREATE TABLE IF NOT EXISTS pitr (id int, at timestamptz DEFAULT clock_timestamp())")
    psql("INSERT INTO pitr (id) SELECT g FROM generate_series(1, 1000) g")
    time.sleep(1)
    target = psql("SELECT now()")
    time.sleep(1)
    psql("INSERT INTO pitr (id) SELECT g FROM generate_series(1001, 2000) g")
    psql("SELECT pg_switch_wal()")
    time.sleep(3)
    datadir = "/var/lib/postgresql/bench-pitr"
    stop_and_remove(bin_dir, datadir)
    start = time.monotonic()
    sh(
        DB,
        f"mkdir -p {datadir} && chmod 700 {datadir} && pgbackrest --stanza=main --pg1-path={datadir} "
        f"--archive-mode=off --type=time '--target={target}' --target-action=promote restore",
        user="postgres",
    )
    start_restored(bin_dir, datadir, 5495)
    record("pgBackRest PITR: restore + replay to target, queryable", time.monotonic() - start)
    rows = psql("SELECT count(*) FROM pitr", port=5495)
    stop_and_remove(bin_dir, datadir)

    repo_size = sh(REPO, "du -sh /var/lib/pgbackrest | cut -f1")
    print()
    print(f"database size {size}; repository (encrypted, several fulls) {repo_size}")
    print(f"PITR rows back: {rows} of 1000 expected")
    print(f"{'measurement':<56} {'median s':>9}")
    for name, values in results.items():
        print(f"{name:<56} {statistics.median(values):9.1f}")
    dump = statistics.median(results["pg_dump -Fc"])
    backup = statistics.median(results["pgBackRest full backup, lz4, 2 processes (role default)"])
    pg_restore = statistics.median(results["pg_restore (to a queryable database)"])
    restore = statistics.median(results["pgBackRest restore: files + recovery, queryable"])
    print(f"\nbackup speed-up vs pg_dump: {dump / backup:.1f}x")
    print(f"restore speed-up vs pg_restore: {pg_restore / restore:.1f}x")


if __name__ == "__main__":
    main()
