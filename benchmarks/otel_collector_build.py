#!/usr/bin/env python
"""Time the otel_collector role's controller-side artifact preparation (build method).

Runs the role's artifact tasks (include_role tasks_from: artifact) on the controller only, and
prints one line per case:

  warm     the cached build for the same inputs exists: a stat, no Go at all
  rebuild  new inputs (another binary name) with Go's module and build caches warm: generate, link
  cold     (--cold) an empty cache directory: builder install, module downloads, full compile

Usage: python benchmarks/otel_collector_build.py [--cache DIR] [--cold]
(inside the tools' environment: source scripts/lib.sh; ensure_venv). Nothing leaves the controller
except Go module downloads from the configured GOPROXY.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PLAYBOOK = PROJECT / "scripts" / "collector-artifact.yml"  # what the test suite runs first


def run(cache: Path, extra: dict) -> float:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(PROJECT / ".collections"), ANSIBLE_NOCOLOR="1")
    variables = {"otel_collector_cache_dir": str(cache), "ansible_python_interpreter": sys.executable, **extra}
    cmd = ["ansible-playbook", "-i", "localhost,", str(PLAYBOOK), "-e", json.dumps(variables)]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"ansible-playbook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/apes-infra/otelcol")
    parser.add_argument("--cold", action="store_true", help="also time a build into an empty cache")
    args = parser.parse_args()

    print(f"cache: {args.cache}")
    first = run(args.cache, {})  # makes sure the default build is cached
    print(f"default build (cached or built now): {first:8.1f} s")
    print(f"warm    (cache hit, same inputs):    {run(args.cache, {}):8.1f} s")
    name = f"otelcol-bench-{int(time.time())}"
    print(f"rebuild (new inputs, Go caches warm): {run(args.cache, {'otel_collector_name': name}):8.1f} s")
    build_dirs = sorted((args.cache / "builds").glob(f"*/{name}"))
    for path in build_dirs:  # the benchmark's own build: not kept
        subprocess.run(["rm", "-rf", str(path.parent)], check=True)
    if args.cold:
        with tempfile.TemporaryDirectory(dir=args.cache.parent) as empty:
            print(f"cold    (empty cache):               {run(Path(empty), {}):8.1f} s")


if __name__ == "__main__":
    main()
