#!/usr/bin/env python
"""Run the apes.infra test suite and print one table of results.

Ansible lanes (README, "Lanes"): every ansible-core release line we claim, each in its own
virtual environment prepared by scripts/lib.sh (ensure_lanes), which passes them here as
APES_LANES ("2.19 2.21", oldest first) with APES_VENV_<lane> for a lane that runs on this machine
and APES_LANE_NOT_RUN_<lane> (the reason) for one that does not.

- yamllint, ruff and the changelog lint do not depend on Ansible: once, in the newest lane.
- ansible-lint, unit tests, the collection build (with Galaxy's importer) and ansible-test sanity:
  in every lane.
- Molecule scenarios: every scenario in the newest lane; OLDER_LANE_SCENARIOS in the older ones.

The static steps run one after another in one worker; scenarios in the others, APES_JOBS workers
in all (default 3: the scenarios mostly wait on apt and services, not on CPU). Scenarios start
longest first, ordered by the durations of the previous run. Arguments select steps or scenarios
by name (all their lanes) or by name@lane (one lane): `run_suite.py units ansible-lint@2.19`.

Called by scripts/test after the bootstrap.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(os.environ["APES_ROOT"])
CACHE = Path(os.environ["APES_CACHE"])
RUN_ID = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
LOGS = CACHE / "logs" / RUN_ID
DURATIONS = CACHE / "durations.json"
# The older lanes run this cheap scenario (the newest lane runs them all): the whole suite must fit
# CI's 90 minutes, and the default scenario alone takes about 15 (README, "Lanes").
OLDER_LANE_SCENARIOS = ("os_tuning",)
# Galaxy's importer, offline: no containers, no network (the file says which settings do that).
GALAXY_IMPORTER_CONFIG = ROOT / ".config" / "galaxy-importer.cfg"

# A step or scenario that runs past its limit is stopped and fails, with the tail of its log in the
# summary; the suite as a whole must stay inside CI's 90 minutes.
STEP_TIMEOUT = int(os.environ.get("APES_STEP_TIMEOUT", "1200"))
SCENARIO_TIMEOUT = int(os.environ.get("APES_SCENARIO_TIMEOUT", "2400"))

_print_lock = threading.Lock()
_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()
ABORT = threading.Event()  # set when the suite stops: no new command starts


@dataclass(frozen=True)
class Lane:
    """One ansible-core release line in its own virtual environment (None: not run here)."""

    name: str
    venv: Path | None
    reason: str = ""

    @property
    def env(self) -> dict[str, str]:
        """The environment of a command in this lane: its venv first on PATH, no other venv of ours."""
        assert self.venv is not None
        ours = f"{CACHE}/venv-"
        path = [d for d in os.environ.get("PATH", "").split(":") if d and not d.startswith(ours)]
        return {
            **os.environ,
            "PATH": ":".join([str(self.venv / "bin"), *path]),
            "VIRTUAL_ENV": str(self.venv),
            "APES_VENV": str(self.venv),
            "APES_LANE": self.name,
        }

    def python(self, code: str) -> str:
        assert self.venv is not None
        return subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()

    @property
    def python_version(self) -> str:
        return self.python("import sys; print('%d.%d' % sys.version_info[:2])")


def lanes_from_env() -> list[Lane]:
    """The lanes scripts/lib.sh prepared, oldest first; without them (the runner started by hand
    inside one venv), that venv as the only lane."""
    names = os.environ.get("APES_LANES", "").split()
    if not names:
        return [Lane(os.environ.get("APES_LANE", "current"), Path(sys.prefix))]
    lanes = []
    for name in names:
        var = name.replace(".", "_")
        venv = os.environ.get(f"APES_VENV_{var}")
        reason = os.environ.get(f"APES_LANE_NOT_RUN_{var}", "no virtual environment was prepared for it")
        lanes.append(Lane(name, Path(venv) if venv else None, "" if venv else reason))
    return lanes


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
    log = _log_of(name)
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
        except BaseException:
            # Interrupted while waiting (a step run by the main thread, as the collector build is):
            # stop it here, since stop_everything no longer finds it once it leaves _running.
            _stop_group(proc, grace=5)
            raise
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


def ansible_test_pip_version(lane: Lane) -> str:
    """The pip release the lane's ansible-test bootstraps into its virtual environments
    (24.2 for ansible-core 2.19, 25.2 for 2.21)."""
    return lane.python(
        "import types\n"
        "from ansible_test._internal.python_requirements import get_venv_packages\n"
        f"print(get_venv_packages(types.SimpleNamespace(version={lane.python_version!r}))['pip'])"
    )


def ensure_get_pip_standin(lane: Lane) -> None:
    """ansible-test bootstraps pip from a CI file server; offline, give it a stand-in.

    Only when the real script cannot be downloaded, so that online machines use the real one.
    One per pip release: each lane's ansible-test asks for its own.
    """
    pip_version = ansible_test_pip_version(lane)
    cache = Path.home() / ".ansible/test/cache"
    target = cache / f"get_pip_{pip_version.replace('.', '_')}.py"
    if target.exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    host, path = "ci-files.testing.ansible.com", f"/ansible-test/get-pip-{pip_version}.py"
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
    wheel = f"pip-{pip_version}-py3-none-any.whl"
    if not (cache / wheel).exists():
        assert lane.venv is not None
        subprocess.run(
            [
                str(lane.venv / "bin" / "python"),
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "-d",
                str(cache),
                f"pip=={pip_version}",
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
# Every step takes the lane it runs in; its commands run with that lane's environment.


def step_yamllint(lane: Lane) -> bool:
    return run(f"yamllint@{lane.name}", ["yamllint", "--strict", "."], env=lane.env)


def step_ansible_lint(lane: Lane) -> bool:
    return run(f"ansible-lint@{lane.name}", ["ansible-lint", "--offline", "--strict"], env=lane.env)


def step_ruff(lane: Lane) -> bool:
    ok = run(f"ruff@{lane.name}", ["ruff", "check", "."], env=lane.env)
    return run(f"ruff@{lane.name}", ["ruff", "format", "--check", "."], env=lane.env) and ok


def step_changelog(lane: Lane) -> bool:
    return run(f"changelog@{lane.name}", ["antsibull-changelog", "lint"], env=lane.env)


def step_sanity(lane: Lane) -> bool:
    # One sanity run at a time per machine: the copy and ansible-test's caches are shared.
    with (CACHE / "sanity.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_get_pip_standin(lane)
        dest = collection_copy(CACHE / "sanity-tree")
        return run(
            f"sanity@{lane.name}",
            ["ansible-test", "sanity", "--venv", "--python", lane.python_version, "--color", "no"],
            cwd=dest,
            env=lane.env,
        )


def step_units(lane: Lane) -> bool:
    return run(
        f"units@{lane.name}",
        ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"],
        env=lane.env,
    )


# Top-level entries of the checkout that stay out of the Galaxy artifact (galaxy.yml build_ignore;
# README, "What the Galaxy artifact holds"), and the local environment's playbooks.
NOT_IN_ARTIFACT = {"tests", "molecule", "benchmarks", ".config", ".ci", "scripts", ".collections", "inventories"}
LOCAL_ENV_PLAYBOOKS = ("playbooks/local_env_", "playbooks/tasks/")


def step_build(lane: Lane) -> bool:
    """The Galaxy artifact builds, holds no tests, molecule scenarios, benchmarks or local
    environment, installs and works from the installed copy, and Galaxy's importer accepts it."""
    log_name = f"build@{lane.name}"
    with tempfile.TemporaryDirectory() as tmp:
        if not run(log_name, ["ansible-galaxy", "collection", "build", "--output-path", tmp, "--force"], env=lane.env):
            return False
        artifacts = list(Path(tmp).glob("apes-infra-*.tar.gz"))
        if len(artifacts) != 1:
            return False
        listing = subprocess.run(["tar", "-tzf", str(artifacts[0])], capture_output=True, text=True, check=True).stdout
        entries = [line.removeprefix("./") for line in listing.splitlines()]
        bad = [
            line
            for line in entries
            if line.split("/")[0] in NOT_IN_ARTIFACT or "/.secrets" in line or line.startswith(LOCAL_ENV_PLAYBOOKS)
        ]
        with _log_of(log_name).open("a") as fh:
            fh.write(listing)
            fh.write(f"\nforbidden entries: {bad}\n")
        if bad:
            return False
        roles = sorted({line.split("/")[1] for line in entries if line.startswith("roles/") and line.count("/") >= 2})
        ok = installed_copy_works(lane, artifacts[0], Path(tmp))
        return galaxy_importer_accepts(lane, artifacts[0], Path(tmp), roles) and ok


def installed_copy_works(lane: Lane, artifact: Path, tmp: Path) -> bool:
    """The artifact installs into a clean path, and from there (outside the checkout, without its
    ansible.cfg) the site and restore playbooks parse with every role resolved by its FQCN and
    ansible-doc reads the roles' argument specs. The dependencies come from the `ansible` package
    of the lane's environment (Galaxy is unreachable here: --no-deps)."""
    log_name = f"build@{lane.name}"
    target = tmp / "installed"
    if not run(
        log_name,
        ["ansible-galaxy", "collection", "install", "--no-deps", "-p", str(target), str(artifact)],
        cwd=tmp,
        env=lane.env,
    ):
        return False
    env = {k: v for k, v in lane.env.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(target)  # plus the environment's own ansible_collections
    inventory = ROOT / "inventories" / "local" / "hosts.yml"
    checks = [
        ["ansible-playbook", "-i", str(inventory), "--syntax-check", "apes.infra.site"],
        ["ansible-playbook", "-i", str(inventory), "--syntax-check", "apes.infra.postgresql_restore"],
        ["ansible-playbook", "-i", str(inventory), "--syntax-check", "apes.infra.redis_restore"],
        ["ansible-doc", "-t", "role", "apes.infra.postgresql", "apes.infra.redis", "apes.infra.otel_collector"],
        ["ansible-doc", "apes.infra.pg_tune", "apes.infra.pgbackrest_info"],
    ]
    return all(run(log_name, cmd, cwd=tmp, env=env) for cmd in checks)


def galaxy_importer_accepts(lane: Lane, artifact: Path, tmp: Path, roles: list[str]) -> bool:
    """Galaxy's importer (galaxy-importer, the code Galaxy runs on every upload) on the artifact,
    offline (GALAXY_IMPORTER_CONFIG: no ansible-test containers, ansible-lint --offline). It
    exits 0 even when it logged errors, so its log is read: any ERROR or WARNING fails the step,
    and so does a role without a description, a module without documentation, or a module whose
    documentation lacks an attribute of the doc fragment (check_mode, diff_mode, idempotent)."""
    log_name = f"build@{lane.name}"
    log = _log_of(log_name)
    work = tmp / "galaxy-importer"
    work.mkdir()
    # Only our configuration file: GALAXY_IMPORTER_<SETTING> variables would override it.
    env = {k: v for k, v in lane.env.items() if not k.startswith("GALAXY_IMPORTER_")}
    env["GALAXY_IMPORTER_CONFIG"] = str(GALAXY_IMPORTER_CONFIG)
    start = log.stat().st_size
    ran = run(log_name, ["python", "-m", "galaxy_importer.main", str(artifact)], cwd=work, env=env)
    with log.open("rb") as fh:
        fh.seek(start)
        output = fh.read().decode(errors="replace").splitlines()
    problems = [line for line in output if line.startswith(("ERROR:", "WARNING:"))]
    if not any(line == "Importer processing completed successfully" for line in output):
        problems.append("the importer did not report 'Importer processing completed successfully'")
    result_file = work / "importer_result.json"
    if result_file.exists():
        result = json.loads(result_file.read_text())
        described = {c["name"] for c in result["contents"] if c["content_type"] == "role" and c.get("description")}
        problems += [
            f"role {r}: Galaxy shows no description (meta/main.yml galaxy_info)" for r in roles if r not in described
        ]
        problems += module_doc_problems(result)
    else:
        problems.append(f"the importer wrote no {result_file.name}")
    with log.open("a") as fh:
        fh.write(f"\ngalaxy-importer problems: {problems}\n")
    return ran and not problems


def module_doc_problems(result: dict) -> list[str]:
    attributes = ("check_mode", "diff_mode", "idempotent")
    problems = []
    for content in result["docs_blob"]["contents"]:
        if content["content_type"] != "module":
            continue
        doc = (content.get("doc_strings") or {}).get("doc")
        if not doc:
            problems.append(f"module {content['content_name']}: ansible-doc gave the importer no documentation")
            continue
        missing = [a for a in attributes if a not in (doc.get("attributes") or {})]
        if missing:
            problems.append(f"module {content['content_name']}: no attribute {', '.join(missing)} in its documentation")
    return problems


# Steps that do not depend on Ansible run once, in the newest lane; the others in every lane.
SHARED_STEPS = [
    ("yamllint", step_yamllint),
    ("ruff", step_ruff),
    ("changelog", step_changelog),
]
LANE_STEPS = [
    ("ansible-lint", step_ansible_lint),
    ("units", step_units),
    ("build", step_build),
    ("sanity", step_sanity),
]


def step_collector(lane: Lane) -> bool:
    """The collector binary of the scenarios, built into the cache (or found there: about 2 s)
    before any scenario starts. A cold Go build takes minutes; inside a scenario, beside two
    others, it could take that scenario past its limit."""
    return run(
        f"collector@{lane.name}",
        [
            "ansible-playbook",
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={lane.venv}/bin/python",
            str(ROOT / "scripts" / "collector-artifact.yml"),
        ],
        env=lane.env,
        timeout=SCENARIO_TIMEOUT,
    )


def scenarios() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def step_scenario(lane: Lane, name: str) -> bool:
    log_name = f"molecule {name}@{lane.name}"
    # The instances have fixed names: one run of a scenario at a time on this machine (the same
    # scenario in another lane, or from another checkout, waits here). The lock is held for the
    # whole test and its cleanup, so its name must not be one that a command run inside takes.
    (CACHE / "locks").mkdir(exist_ok=True)
    with (CACHE / "locks" / f"scenario-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Files a test keeps (a browser's screenshot) go beside the logs: APES_ARTIFACTS.
        env = {**lane.env, "APES_ARTIFACTS": str(LOGS / "artifacts" / f"{name}@{lane.name}")}
        if run(log_name, ["molecule", "test", "-s", name], env=env, timeout=SCENARIO_TIMEOUT):
            return True
        # Failed or stopped half-way: remove its containers so that they hold no memory or names.
        run(log_name, ["molecule", "destroy", "-s", name], env=lane.env, timeout=300, cleanup=True)
        return False


# --- driver ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One row of the table: a step or scenario in one lane."""

    name: str  # as in the table and on the command line: "units", "molecule os_tuning"
    lane: Lane
    fn: Callable[..., bool]
    args: tuple = ()

    @property
    def key(self) -> str:
        return f"{self.name}@{self.lane.name}"

    @property
    def selectors(self) -> set[str]:
        bare = self.name.removeprefix("molecule ")
        return {bare, f"{bare}@{self.lane.name}"}


def _log_of(label: str) -> Path:
    """The log of a step: run(label, ...) and Task.key name the same file."""
    return LOGS / f"{label.replace(' ', '-')}.log"


def _summary(
    tasks: list[Task], results: dict[str, tuple[bool, float]], total: float, not_run: list[Lane]
) -> list[Task]:
    width = max([len(t.name) for t in tasks] + [len("total (wall clock)")])
    lane_width = max([len(t.lane.name) for t in tasks] + [len(lane.name) for lane in not_run] + [len("lane")])
    print()
    print(f"{'step':<{width}}  {'lane':<{lane_width}}  result   seconds")
    print(f"{'-' * width}  {'-' * lane_width}  -------  -------")
    for t in tasks:
        if t.key in results:
            ok, secs = results[t.key]
            print(f"{t.name:<{width}}  {t.lane.name:<{lane_width}}  {'pass' if ok else 'FAIL':<7}  {secs:7.0f}")
        else:
            print(f"{t.name:<{width}}  {t.lane.name:<{lane_width}}  {'not run':<7}  {'':>7}")
    for lane in not_run:
        print(f"{'(every step)':<{width}}  {lane.name:<{lane_width}}  {'not run':<7}  {'':>7}  {lane.reason}")
    print(f"{'total (wall clock)':<{width}}  {'':<{lane_width}}  {'':<7}  {total:7.0f}")
    failed = [t for t in tasks if t.key in results and not results[t.key][0]]
    for t in failed:
        log = _log_of(t.key)
        print(f"\n--- last lines of {log} ---")
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        print("\n".join(lines[-60:]))
    return failed


def plan(lanes: list[Lane]) -> tuple[list[Task], list[list[Task]]]:
    """The static tasks (one worker, in order) and the scenario groups (each group runs one
    scenario in its lanes, newest first, one after the other)."""
    runnable = [lane for lane in lanes if lane.venv is not None]
    newest = runnable[-1]
    static = [Task(n, newest, f) for n, f in SHARED_STEPS]
    for lane in reversed(runnable):
        static += [Task(n, lane, f) for n, f in LANE_STEPS]
    groups = []
    for s in scenarios():
        group = [Task(f"molecule {s}", newest, step_scenario, (s,))]
        if s in OLDER_LANE_SCENARIOS:
            group += [Task(f"molecule {s}", lane, step_scenario, (s,)) for lane in reversed(runnable[:-1])]
        groups.append(group)
    return static, groups


def main(argv: list[str]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    lanes = lanes_from_env()
    not_run = [lane for lane in lanes if lane.venv is None]
    if len(not_run) == len(lanes):
        print(f"no lane can run here: {[f'{lane.name}: {lane.reason}' for lane in lanes]}", file=sys.stderr)
        return 2
    static, groups = plan(lanes)
    every = static + [t for g in groups for t in g]
    wanted = set(argv)
    known = set().union(*(t.selectors for t in every))
    # NAME@LANE of a lane that cannot run here is known: its row says why it did not run.
    asked_not_run = {w for w in wanted for lane in not_run if w.endswith(f"@{lane.name}")}
    known |= {w for w in asked_not_run if w.rsplit("@", 1)[0] in {sel.split("@")[0] for sel in known}}
    unknown = wanted - known
    if unknown:
        print(f"unknown steps or scenarios: {sorted(unknown)}; known: {sorted(known)}", file=sys.stderr)
        return 2
    if wanted:
        static = [t for t in static if t.selectors & wanted]
        groups = [[t for t in g if t.selectors & wanted] for g in groups]
        groups = [g for g in groups if g]

    previous = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    groups.sort(key=lambda g: -sum(previous.get(t.key, 300) for t in g))
    results: dict[str, tuple[bool, float]] = {}
    order = static + [t for g in groups for t in g]

    def timed(t: Task) -> bool:
        label = t.key
        say(f"start {label}")
        t0 = time.monotonic()
        ok = False
        try:
            ok = t.fn(t.lane, *t.args)
        except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as exc:
            # a crashed step is a failed step, with its reason (anything else fails it too, in finally)
            with _log_of(t.key).open("a") as fh:
                fh.write(f"\nstep crashed: {exc!r}\n")
        finally:
            results[label] = (ok, time.monotonic() - t0)
            say(f"{'PASS' if ok else 'FAIL'} {label} ({results[label][1]:.0f} s)")
        return ok

    def run_in_order(tasks: list[Task]) -> None:
        for t in tasks:
            timed(t)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    jobs = max(1, int(os.environ.get("APES_JOBS", "3")))
    t_start = time.monotonic()
    say(f"logs: {LOGS} (limits: {STEP_TIMEOUT} s per step, {SCENARIO_TIMEOUT} s per scenario)")
    for lane in lanes:
        say(f"lane {lane.name}: {lane.venv}" if lane.venv else f"lane {lane.name}: not run ({lane.reason})")
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = []
        if static:
            futures.append(pool.submit(run_in_order, static))
        # Scenarios start once the collector is in the cache (beside the static steps). When the
        # build fails, they still run: those that need it fail with the builder's own message.
        if groups:
            prebuild = Task("collector", groups[0][0].lane, step_collector)
            order.insert(len(static), prebuild)
            timed(prebuild)
        futures.extend(pool.submit(run_in_order, g) for g in groups)
        for fut in futures:
            fut.result()
    finally:
        # Normally everything has finished here. After an interruption or a crash of the runner
        # itself: start nothing more, stop what runs, and still print the table.
        ABORT.set()
        pool.shutdown(wait=False, cancel_futures=True)
        stop_everything()
        pool.shutdown(wait=True)
        failed = _summary(order, results, time.monotonic() - t_start, not_run)
        previous.update({t.key: results[t.key][1] for t in order if t.key in results and results[t.key][0]})
        tmp = DURATIONS.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(previous, indent=1))
        tmp.replace(DURATIONS)
        print(f"\nlogs: {LOGS}")
    # A lane that cannot run here fails the suite only when it was asked for by name.
    return 1 if failed or len(results) < len(order) or asked_not_run else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt as exc:
        print(f"\nthe suite was interrupted ({exc}); steps still running were stopped", file=sys.stderr)
        sys.exit(130)
