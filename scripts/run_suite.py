#!/usr/bin/env python
"""Run the apes.infra test suite and print one table of results.

Static checks (yamllint, ansible-lint, ruff, changelog lint, ansible-test sanity, unit tests,
collection build) run one after another in one lane; Molecule scenarios run in the other lanes,
APES_JOBS lanes in all (default 3: the scenarios mostly wait on apt and services, not on CPU).
Scenarios start longest first, ordered by the durations of the previous run.

Called by scripts/test after the bootstrap, inside the virtual environment.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(os.environ["APES_ROOT"])
CACHE = Path(os.environ["APES_CACHE"])
RUN_ID = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
LOGS = CACHE / "logs" / RUN_ID
DURATIONS = CACHE / "durations.json"
PIP_FOR_ANSIBLE_TEST = "24.2"

# A step or scenario that runs past its limit is stopped and fails, with the tail of its log in the
# summary; the suite as a whole must stay inside CI's 90 minutes.
STEP_TIMEOUT = int(os.environ.get("APES_STEP_TIMEOUT", "1200"))
SCENARIO_TIMEOUT = int(os.environ.get("APES_SCENARIO_TIMEOUT", "1500"))

_print_lock = threading.Lock()
_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()
ABORT = threading.Event()  # set when the suite stops: no new command starts


def say(msg: str) -> None:
    with _print_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """Stop a command and everything it started (its own process group): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    name: str,
    cmd: list[str],
    cwd: Path = ROOT,
    env: dict | None = None,
    timeout: float | None = None,
    cleanup: bool = False,
) -> bool:
    """Run cmd with its output appended to the step's log; False when it fails or runs past timeout.

    Once the suite is stopping, only cleanup commands still start."""
    timeout = STEP_TIMEOUT if timeout is None else timeout
    log = LOGS / f"{name}.log"
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(cmd)}  (cwd {cwd}, limit {timeout:.0f} s)\n".encode())
        fh.flush()
        with _running_lock:
            if ABORT.is_set() and not cleanup:
                fh.write(b"not started: the suite is stopping\n")
                return False
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            _running.add(proc)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            fh.write(f"\nTIMEOUT: stopped after {timeout:.0f} s: {' '.join(cmd)}\n".encode())
            return False
        finally:
            with _running_lock:
                _running.discard(proc)
        if proc.returncode != 0 and ABORT.is_set():
            fh.write(b"\nSTOPPED: the suite was interrupted\n")
    return proc.returncode == 0


def stop_everything() -> None:
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _stop_group(proc, grace=5)


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).exists() and not (ROOT / f).is_symlink()]


def ensure_get_pip_standin() -> None:
    """ansible-test bootstraps pip from a CI file server; offline, give it a stand-in.

    Only when the real script cannot be downloaded, so that online machines use the real one.
    """
    cache = Path.home() / ".ansible/test/cache"
    target = cache / f"get_pip_{PIP_FOR_ANSIBLE_TEST.replace('.', '_')}.py"
    if target.exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    host, path = "ci-files.testing.ansible.com", f"/ansible-test/get-pip-{PIP_FOR_ANSIBLE_TEST}.py"
    url = f"https://{host}{path}"
    try:
        conn = http.client.HTTPSConnection(host, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status == 200:
            target.write_bytes(resp.read())
            return
    except (OSError, http.client.HTTPException):
        pass
    wheel = f"pip-{PIP_FOR_ANSIBLE_TEST}-py3-none-any.whl"
    if not (cache / wheel).exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                str(cache),
                f"pip=={PIP_FOR_ANSIBLE_TEST}",
            ],
            check=True,
        )
    target.write_text(
        "# Stand-in for get-pip.py, written by apes.infra's scripts/run_suite.py because\n"
        f"# {url} was unreachable. Installs pip from the wheel beside this file.\n"
        "import os, sys\n"
        f"sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), {wheel!r}))\n"
        "from pip._internal.cli.main import main\n"
        "args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]\n"
        "sys.exit(main(['install', '--upgrade', '--force-reinstall', *args]))\n"
    )


def collection_copy(dest_root: Path) -> Path:
    """Copy the checkout's files to <dest_root>/ansible_collections/apes/infra."""
    dest = dest_root / "ansible_collections" / "apes" / "infra"
    if dest.exists():
        shutil.rmtree(dest)
    for rel in tracked_files():
        src = ROOT / rel
        dst = dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    # ansible-test wants a git work tree to list files, or none at all; give it its own.
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    return dest


# --- steps -----------------------------------------------------------------------------------


def step_yamllint() -> bool:
    return run("yamllint", ["yamllint", "--strict", "."])


def step_ansible_lint() -> bool:
    return run("ansible-lint", ["ansible-lint", "--offline", "--strict"])


def step_ruff() -> bool:
    ok = run("ruff", ["ruff", "check", "."])
    return run("ruff", ["ruff", "format", "--check", "."]) and ok


def step_changelog() -> bool:
    return run("changelog", ["antsibull-changelog", "lint"])


def step_sanity() -> bool:
    # One sanity run at a time per machine: the copy and ansible-test's caches are shared.
    with (CACHE / "sanity.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_get_pip_standin()
        dest = collection_copy(CACHE / "sanity-tree")
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        return run("sanity", ["ansible-test", "sanity", "--venv", "--python", py, "--color", "no"], cwd=dest)


def step_units() -> bool:
    return run("units", ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"])


def step_build() -> bool:
    """The Galaxy artifact builds, and holds no tests, molecule scenarios or benchmarks."""
    with tempfile.TemporaryDirectory() as tmp:
        if not run("build", ["ansible-galaxy", "collection", "build", "--output-path", tmp, "--force"]):
            return False
        artifacts = list(Path(tmp).glob("apes-infra-*.tar.gz"))
        if len(artifacts) != 1:
            return False
        listing = subprocess.run(["tar", "-tzf", str(artifacts[0])], capture_output=True, text=True, check=True).stdout
        bad = [
            line
            for line in listing.splitlines()
            if line.split("/")[0] in {"tests", "molecule", "benchmarks", ".config", ".ci", "scripts", ".collections"}
            or "/.secrets" in line
        ]
        with (LOGS / "build.log").open("a") as fh:
            fh.write(listing)
            fh.write(f"\nforbidden entries: {bad}\n")
        if bad:
            return False
        return installed_copy_works(artifacts[0], Path(tmp))


def installed_copy_works(artifact: Path, tmp: Path) -> bool:
    """The artifact installs into a clean path, and from there (outside the checkout, without its
    ansible.cfg) the site and restore playbooks parse with every role resolved by its FQCN and
    ansible-doc reads the roles' argument specs. The dependencies come from the `ansible` package
    of the tools' environment (Galaxy is unreachable here: --no-deps)."""
    target = tmp / "installed"
    if not run(
        "build",
        ["ansible-galaxy", "collection", "install", "--no-deps", "-p", str(target), str(artifact)],
        cwd=tmp,
    ):
        return False
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(target)  # plus the environment's own ansible_collections
    inventory = ROOT / "inventories" / "local" / "hosts.yml"
    checks = [
        ["ansible-playbook", "-i", str(inventory), "--syntax-check", "apes.infra.site"],
        ["ansible-playbook", "-i", str(inventory), "--syntax-check", "apes.infra.postgresql_restore"],
        ["ansible-playbook", "-i", str(inventory), "--syntax-check", "apes.infra.redis_restore"],
        ["ansible-doc", "-t", "role", "apes.infra.postgresql", "apes.infra.redis", "apes.infra.otel_collector"],
        ["ansible-doc", "apes.infra.pg_tune", "apes.infra.pgbackrest_info"],
    ]
    return all(run("build", cmd, cwd=tmp, env=env) for cmd in checks)


STATIC_STEPS = [
    ("yamllint", step_yamllint),
    ("ansible-lint", step_ansible_lint),
    ("ruff", step_ruff),
    ("changelog", step_changelog),
    ("units", step_units),
    ("build", step_build),
    ("sanity", step_sanity),
]


def scenarios() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def step_scenario(name: str) -> bool:
    if run(f"molecule-{name}", ["molecule", "test", "-s", name], timeout=SCENARIO_TIMEOUT):
        return True
    # Failed or stopped half-way: remove its containers so that they hold no memory or names.
    run(f"molecule-{name}", ["molecule", "destroy", "-s", name], timeout=300, cleanup=True)
    return False


# --- driver ----------------------------------------------------------------------------------


def _log_of(label: str) -> Path:
    return LOGS / f"{label.replace(' ', '-')}.log"


def _summary(order: list[str], results: dict[str, tuple[bool, float]], total: float) -> list[str]:
    width = max([len(n) for n in order] + [len("total (wall clock)")])
    print()
    print(f"{'step':<{width}}  result   seconds")
    print(f"{'-' * width}  -------  -------")
    for n in order:
        if n in results:
            ok, secs = results[n]
            print(f"{n:<{width}}  {'pass' if ok else 'FAIL':<7}  {secs:7.0f}")
        else:
            print(f"{n:<{width}}  {'not run':<7}  {'':>7}")
    print(f"{'total (wall clock)':<{width}}  {'':<7}  {total:7.0f}")
    failed = [n for n in order if n in results and not results[n][0]]
    for n in failed:
        log = _log_of(n)
        print(f"\n--- last lines of {log} ---")
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        print("\n".join(lines[-60:]))
    return failed


def main(argv: list[str]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    wanted = set(argv)
    all_scenarios = scenarios()
    unknown = wanted - {n for n, _fn in STATIC_STEPS} - set(all_scenarios)
    if unknown:
        print(
            f"unknown steps or scenarios: {sorted(unknown)}; known: {[n for n, _fn in STATIC_STEPS] + all_scenarios}",
            file=sys.stderr,
        )
        return 2
    static = [(n, f) for n, f in STATIC_STEPS if not wanted or n in wanted]
    todo = [s for s in all_scenarios if not wanted or s in wanted]

    previous = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    todo.sort(key=lambda s: -previous.get(f"molecule {s}", 300))
    results: dict[str, tuple[bool, float]] = {}
    order = [n for n, _fn in static] + [f"molecule {s}" for s in todo]

    def timed(label: str, fn, *args) -> bool:
        say(f"start {label}")
        t0 = time.monotonic()
        ok = False
        try:
            ok = fn(*args)
        except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as exc:
            # a crashed step is a failed step, with its reason (anything else fails it too, in finally)
            with _log_of(label).open("a") as fh:
                fh.write(f"\nstep crashed: {exc!r}\n")
        finally:
            results[label] = (ok, time.monotonic() - t0)
            say(f"{'PASS' if ok else 'FAIL'} {label} ({results[label][1]:.0f} s)")
        return ok

    def static_lane() -> None:
        for n, f in static:
            timed(n, f)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    jobs = max(1, int(os.environ.get("APES_JOBS", "3")))
    t_start = time.monotonic()
    say(f"logs: {LOGS} (limits: {STEP_TIMEOUT} s per step, {SCENARIO_TIMEOUT} s per scenario)")
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = []
        if static:
            futures.append(pool.submit(static_lane))
        futures.extend(pool.submit(timed, f"molecule {s}", step_scenario, s) for s in todo)
        for fut in futures:
            fut.result()
    finally:
        # Normally everything has finished here. After an interruption or a crash of the runner
        # itself: start nothing more, stop what runs, and still print the table.
        ABORT.set()
        pool.shutdown(wait=False, cancel_futures=True)
        stop_everything()
        pool.shutdown(wait=True)
        failed = _summary(order, results, time.monotonic() - t_start)
        previous.update({n: results[n][1] for n in order if n in results and results[n][0]})
        tmp = DURATIONS.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(previous, indent=1))
        tmp.replace(DURATIONS)
        print(f"\nlogs: {LOGS}")
    return 1 if failed or len(results) < len(order) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt as exc:
        print(f"\nthe suite was interrupted ({exc}); steps still running were stopped", file=sys.stderr)
        sys.exit(130)
