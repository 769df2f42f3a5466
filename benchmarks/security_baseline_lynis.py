#!/usr/bin/env python
"""Lynis hardening index before and after apes.infra.security_baseline, with Debian 12's Lynis (3.0.8).

Creates four systemd containers from apes-infra/debian:12 (named apes-security-baseline-bench-*, like
the test instances: benchmarks/security_baseline_lynis.yml), then runs `lynis audit system --quick`
once per measurement, one after the other, with the same Lynis:

  stock            the base image as it is (Lynis installed, nothing else)
  baseline         os_tuning + security_baseline, in site.yml's order
  postgresql       os_tuning + postgresql: a database host as provisioned before this role
  postgresql+      the same container after security_baseline
  postgresql+ssh   another such host with openssh-server (as a host reached over SSH has), after
                   security_baseline (its SSH and fail2ban parts apply)

Prints, per measurement: the index, points, tests, warnings and suggestions; then, for the last two,
every Lynis test that did not get its full points, with why (README of the role, "What Lynis still
suggests"). Containers cannot take some settings a VM takes (kernel parameters, auditd, /proc and
mount options): the index without those tests is printed too, as arithmetic, not a measurement.
Nothing here asserts anything.

Run (about 25 minutes on a quiet 2-core machine; packages come through the local apt cache):
    source scripts/lib.sh && ensure_venv && export APES_CACHE
    python benchmarks/security_baseline_lynis.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PLAYBOOK = PROJECT / "benchmarks" / "security_baseline_lynis.yml"
PREFIX = "apes-security-baseline-bench-"
CASES = ["stock", "baseline", "pg", "pgssh"]
# Lynis tests that measure what a container cannot change (the host's kernel and mounts).
CONTAINER_ONLY = {
    "KRNL-6000": "kernel parameters: /proc/sys is read-only, vm.* and kernel.* are the host's",
    "ACCT-9628": "auditd cannot run: the kernel refuses audit requests from a container",
    "FILE-6344": "/proc is mounted by the container runtime (hidepid)",
    "FILE-6310": "separate partitions for /home, /var: the container has one file system",
    "FILE-6374": "mount options of /dev and others: set by the container runtime",
    "MACF-6290": "AppArmor confines the container from the host, not inside it",
}
DELIBERATE = {
    "USB-3000": "USBGuard: usb-storage cannot load; no USB devices on servers and VMs",
    "MALW-3280": "no malware scanner: AIDE and the audit trail cover changed files",
    "HRDN-7230": "no malware scanner (same as MALW-3280)",
    "HRDN-7220": "binutils (as, ld) is a dependency of needrestart",
    "HRDN-7222": "binutils left executable for all (needrestart's dependency)",
    "DEB-0810": "apt-listbugs asks bugs.debian.org at every install: not for unattended hosts",
    "DEB-0811": "apt-listchanges shows changelogs to a person: not for unattended hosts",
    "DEB-0880": "fail2ban only where openssh-server is installed",
    "TOOL-5190": "fail2ban (an IPS to Lynis) only where openssh-server is installed",
    "AUTH-9286": "password ageing off by default (security_baseline_password_ageing_enabled)",
    "LOGG-2154": "logs leave the host through the OpenTelemetry Collector, which Lynis does not know",
    "SSH-7408": "Port 22 kept (obscurity); MaxSessions 4, not 2, for multiplexed sessions",
    "SSH-7440": "AllowGroups only when security_baseline_ssh_allow_groups names groups (empty by default)",
    "PKGS-7388": "Lynis 3.0.8 does not read deb822 .sources files (the security suite is there)",
}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def inventory(directory: Path) -> Path:
    hosts = {case: {"ansible_host": PREFIX + case} for case in CASES}
    data = {
        "all": {
            "vars": {
                "ansible_connection": "community.docker.docker",
                "ansible_python_interpreter": "/usr/bin/python3",
                "os_tuning_time_sync": "unmanaged",
                "postgresql_monitoring_password": "benchmark-monitoring-password",
            },
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "bench_containers": [
                        {
                            "name": PREFIX + case,
                            "image": "apes-infra/debian:12",
                            "labels": {
                                "owner": "apes-benchmark",
                                "org.apes-infra.benchmark": "security_baseline_lynis",
                            },
                        }
                        for case in CASES
                    ],
                }
            },
            "children": {
                "bench": {"hosts": hosts},
                "stock": {"hosts": {"stock": {}}},
                "baseline": {"hosts": {"baseline": {}}},
                "pg": {"hosts": {"pg": {}}},
                "pgssh": {"hosts": {"pgssh": {}}},
                "postgresql": {"children": {"postgresql_primary": {"hosts": {"pg": {}, "pgssh": {}}}}},
            },
        }
    }
    path = directory / "hosts.yml"
    path.write_text(json.dumps(data))
    return path


def playbook(inventory_file: Path, phase: str) -> float:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(PROJECT / ".collections"), ANSIBLE_NOCOLOR="1")
    start = time.monotonic()
    proc = run(
        ["ansible-playbook", "-i", str(inventory_file), str(PLAYBOOK), "-e", f"bench_phase={phase}"],
        env=env,
        cwd=PROJECT,
    )
    if proc.returncode != 0:
        sys.exit(f"ansible-playbook -e bench_phase={phase} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return time.monotonic() - start


def points(log: str) -> tuple[dict[str, int], dict[str, int]]:
    """Points got and possible per test, from lynis.log's 'Hardening: assigned ...' lines."""
    got: dict[str, int] = {}
    possible: dict[str, int] = {}
    test = "?"
    for line in log.splitlines():
        found = re.search(r"Performing test ID (\S+)", line)
        if found:
            test = found.group(1)
        partial = re.search(r"Hardening: assigned partial number of hardening points \((\d+) of (\d+)\)", line)
        full = re.search(r"Hardening: assigned maximum number of hardening points for this item \((\d+)\)", line)
        if partial:
            a, b = int(partial.group(1)), int(partial.group(2))
        elif full:
            a = b = int(full.group(1))
        else:
            continue
        got[test] = got.get(test, 0) + a
        possible[test] = possible.get(test, 0) + b
    return got, possible


def lynis(case: str) -> dict:
    container = PREFIX + case
    start = time.monotonic()
    audit = run(["docker", "exec", container, "lynis", "audit", "system", "--quick", "--no-colors"])
    if audit.returncode != 0:
        sys.exit(f"lynis failed on {container}: {audit.stderr[-2000:]}")
    report = run(["docker", "exec", container, "cat", "/var/log/lynis-report.dat"]).stdout
    log = run(["docker", "exec", container, "cat", "/var/log/lynis.log"]).stdout
    scalars = dict(line.split("=", 1) for line in report.splitlines() if "=" in line and "[]" not in line.split("=")[0])
    got, possible = points(log)
    return {
        "index": int(scalars["hardening_index"]),
        "version": scalars.get("lynis_version"),
        "tests": int(scalars.get("lynis_tests_done", 0)),
        "warnings": report.count("\nwarning[]="),
        "suggestions": report.count("\nsuggestion[]="),
        "got": got,
        "possible": possible,
        "seconds": time.monotonic() - start,
    }


def print_losses(label: str, result: dict) -> None:
    got, possible = result["got"], result["possible"]
    lost = sorted(((possible[t] - got[t], t) for t in possible if got[t] < possible[t]), reverse=True)
    print(f"\n{label}: tests below their full points (lost points, test, why)")
    for amount, test in lost:
        why = CONTAINER_ONLY.get(test) or DELIBERATE.get(test) or "not classified"
        kind = "container" if test in CONTAINER_ONLY else "choice"
        print(f"  {amount:3d}  {test:10s} [{kind}] {why}")
    container_possible = sum(possible[t] for t in CONTAINER_ONLY if t in possible)
    container_got = sum(got[t] for t in CONTAINER_ONLY if t in got)
    total_got, total_possible = sum(got.values()), sum(possible.values())
    print(
        f"  index without the container-only tests (arithmetic, not a measurement): "
        f"{(total_got - container_got) * 100 // (total_possible - container_possible)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="apes-lynis-bench-") as tmp:
        inv = inventory(Path(tmp))
        try:
            provision = playbook(inv, "create")
            for case, label in (("stock", "stock"), ("baseline", "baseline"), ("pg", "postgresql")):
                results[label] = lynis(case)
            after = playbook(inv, "after")
            results["postgresql+"] = lynis("pg")
            results["postgresql+ssh"] = lynis("pgssh")
        finally:
            if not args.keep:
                run(["docker", "rm", "-f"] + [PREFIX + case for case in CASES])
    versions = {r["version"] for r in results.values()}
    load = os.getloadavg()[0]
    print(f"Lynis {', '.join(sorted(versions))}, one run per line, Debian 12 containers; load average {load:.1f}")
    print(f"provisioning {provision:.0f} s, security_baseline on the database hosts {after:.0f} s")
    print(f"{'':16s} {'index':>5s} {'points':>9s} {'tests':>5s} {'warn':>4s} {'sugg':>4s} {'seconds':>7s}")
    for label, r in results.items():
        pts = f"{sum(r['got'].values())}/{sum(r['possible'].values())}"
        print(
            f"{label:16s} {r['index']:5d} {pts:>9s} {r['tests']:5d} {r['warnings']:4d} {r['suggestions']:4d} "
            f"{r['seconds']:7.0f}"
        )
    print_losses("postgresql+ (no SSH server)", results["postgresql+"])
    print_losses("postgresql+ssh", results["postgresql+ssh"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
