"""The docker_daemon_config module end to end: it runs as Ansible runs it (a subprocess reading its
arguments from a file) against stand-in `dockerd` executables that behave like Docker 26 (with
--validate) and Docker 20.10 (without it: stops at the root check after loading the configuration),
and a stand-in `unshare`. The real daemons are exercised by the Molecule scenario `docker`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
MODULE = ROOT / "plugins" / "modules" / "docker_daemon_config.py"

# Both stand-ins refuse the key "bogus" and `hosts` next to a -H flag, with dockerd's own messages.
FAKE_DOCKERD = r"""#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
NATIVE = {native}
if args == ["--help"]:
    print("Usage: dockerd [OPTIONS]\n      --config-file string   Daemon configuration file")
    if NATIVE:
        print("      --validate             Validate daemon configuration and exit")
    sys.exit(0)
path = args[args.index("--config-file") + 1]
prefix = f"unable to configure the Docker daemon with file {{path}}: "
try:
    data = json.load(open(path))
except ValueError as exc:
    sys.exit(prefix + str(exc))
if "bogus" in data:
    sys.exit(prefix + "the following directives don't match any configuration option: bogus")
if "hosts" in data and "-H" in args:
    sys.exit(prefix + "the following directives are specified both as a flag and in the configuration file: hosts")
if NATIVE and "--validate" in args:
    print("configuration OK")
    sys.exit(0)
if not NATIVE and os.environ.get("FAKE_IN_USERNS") == "1":
    sys.stderr.write('level=info msg="Starting up"\ndockerd needs to be started with root privileges.\n')
    sys.exit(1)
sys.exit("stand-in dockerd: would start a daemon")
"""

FAKE_UNSHARE = r"""#!/bin/sh
[ "$1" = "--user" ] || { echo "stand-in unshare: expected --user" >&2; exit 2; }
shift
FAKE_IN_USERNS=1 exec "$@"
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "unshare", FAKE_UNSHARE)
    return {
        "bin": bin_dir,
        "log": tmp_path / "dockerd.log",
        "etc": tmp_path / "etc" / "docker",
        "new": executable(tmp_path / "dockerd-26", FAKE_DOCKERD.format(python=sys.executable, native=True)),
        "old": executable(tmp_path / "dockerd-20", FAKE_DOCKERD.format(python=sys.executable, native=False)),
    }


def run_module(tmp_path, env, check=False, diff=False, **args):
    args_file = tmp_path / "args.json"
    args.setdefault("path", str(env["etc"] / "daemon.json"))
    args.setdefault("dockerd", str(env["new"]))
    args_file.write_text(
        json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_diff": diff}})
    )
    proc_env = dict(
        os.environ,
        PYTHONPATH=str(ROOT / ".collections") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        PATH=str(env["bin"]) + os.pathsep + os.environ["PATH"],
        FAKE_LOG=str(env["log"]),
    )
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, env=proc_env, check=False
    )
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON from the module: {proc.stdout} {proc.stderr}") from exc


def calls(env) -> list[list[str]]:
    if not env["log"].exists():
        return []
    return [json.loads(line) for line in env["log"].read_text().splitlines()]


SETTINGS = {"log-driver": "local", "log-opts": {"max-size": "20m", "max-file": "5"}, "live-restore": True}


def test_check_apply_and_idempotence(tmp_path, env):
    """Check, apply, idempotent check, idempotent apply."""
    path = env["etc"] / "daemon.json"
    rc, check = run_module(tmp_path, env, check=True, settings=SETTINGS)
    assert rc == 0, check
    assert check["changed"]
    assert check["changed_keys"] == ["live-restore", "log-driver", "log-opts"]
    assert check["restart_required"]
    assert check["validated_with"] == "dockerd --validate", "check mode validates the candidate too"
    assert not path.exists(), "check mode must not write"

    rc, applied = run_module(tmp_path, env, settings=SETTINGS)
    assert rc == 0, applied
    assert applied["changed"]
    assert json.loads(path.read_text()) == SETTINGS
    assert path.read_text().endswith("}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755

    for check_mode in (True, False):
        rc, again = run_module(tmp_path, env, check=check_mode, settings=SETTINGS)
        assert rc == 0, again
        assert not again["changed"]
        assert again["changed_keys"] == []
        assert again["validated_with"] == ""
    assert sorted(os.listdir(path.parent)) == ["daemon.json"], "no temporary files are left behind"


def test_flags_are_passed_to_the_check(tmp_path, env):
    rc, result = run_module(tmp_path, env, settings=SETTINGS, dockerd_flags=["-H", "fd://", "--containerd=/x.sock"])
    assert rc == 0, result
    validate_call = calls(env)[-1]
    assert validate_call[:4] == ["--validate", "-H", "fd://", "--containerd=/x.sock"]
    assert validate_call[4] == "--config-file"
    assert Path(validate_call[5]).parent == env["etc"], "the candidate is checked next to the live file"


def test_old_dockerd_is_checked_in_a_user_namespace(tmp_path, env):
    rc, result = run_module(tmp_path, env, settings=SETTINGS, dockerd=str(env["old"]))
    assert rc == 0, result
    assert result["validated_with"] == "dockerd configuration loader in a user namespace"
    assert "--validate" not in calls(env)[-1]


@pytest.mark.parametrize("dockerd", ["new", "old"])
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({**SETTINGS, "bogus": 1}, "don't match any configuration option: bogus"),
        (
            {**SETTINGS, "hosts": ["tcp://0.0.0.0:2375"]},
            "specified both as a flag and in the configuration file: hosts",
        ),
    ],
)
def test_refused_candidate_leaves_the_live_file_alone(tmp_path, env, dockerd, settings, message):
    path = env["etc"] / "daemon.json"
    assert run_module(tmp_path, env, settings=SETTINGS)[0] == 0
    live = path.read_text()
    for check_mode in (True, False):
        rc, result = run_module(tmp_path, env, check=check_mode, settings=settings, dockerd=str(env[dockerd]))
        assert rc == 1
        assert result["failed"]
        assert message in result["msg"]
        assert result["msg"].startswith(f"dockerd refused the new {path}")
    assert path.read_text() == live
    assert sorted(os.listdir(path.parent)) == ["daemon.json"]


def test_hosts_accepted_when_the_service_passes_no_socket_flag(tmp_path, env):
    settings = {**SETTINGS, "hosts": ["fd://", "tcp://127.0.0.1:2376"]}
    rc, result = run_module(tmp_path, env, settings=settings, dockerd_flags=["--containerd=/x.sock"])
    assert rc == 0, result


def test_reload_is_enough_for_reloadable_keys(tmp_path, env):
    assert run_module(tmp_path, env, settings=SETTINGS)[0] == 0
    rc, result = run_module(tmp_path, env, settings={**SETTINGS, "live-restore": False, "debug": True})
    assert rc == 0, result
    assert result["changed_keys"] == ["debug", "live-restore"]
    assert not result["restart_required"]
    rc, result = run_module(tmp_path, env, settings={**SETTINGS, "live-restore": False, "debug": True, "log-opts": {}})
    assert result["changed_keys"] == ["log-opts"]
    assert result["restart_required"]
    rc, result = run_module(tmp_path, env, settings={"debug": True}, reloadable_keys=["labels"])
    assert result["restart_required"]
    # Taking a reloadable key out: dockerd keeps its value until a restart.
    rc, result = run_module(tmp_path, env, settings={"debug": True})
    assert rc == 0, result
    assert result["changed_keys"] == []
    rc, result = run_module(tmp_path, env, settings={})
    assert result["changed_keys"] == ["debug"]
    assert result["restart_required"]


def test_diff(tmp_path, env):
    rc, result = run_module(tmp_path, env, diff=True, settings={"debug": True})
    assert rc == 0, result
    assert result["diff"]["before"] == ""
    assert result["diff"]["after"] == '{\n  "debug": true\n}\n'


def test_mode_is_corrected_without_rewriting(tmp_path, env):
    path = env["etc"] / "daemon.json"
    assert run_module(tmp_path, env, settings=SETTINGS)[0] == 0
    path.chmod(0o600)
    before_calls = len(calls(env))
    rc, result = run_module(tmp_path, env, settings=SETTINGS)
    assert rc == 0, result
    assert result["changed"]
    assert result["changed_keys"] == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert len(calls(env)) == before_calls, "unchanged content is not validated again"


def test_missing_dockerd(tmp_path, env):
    missing = str(tmp_path / "no-dockerd")
    rc, result = run_module(tmp_path, env, settings=SETTINGS, dockerd=missing)
    assert rc == 1
    assert f"{missing} does not exist: install Docker Engine" in result["msg"]
    rc, result = run_module(tmp_path, env, check=True, settings=SETTINGS, dockerd=missing)
    assert rc == 0, "check mode on a host without Docker yet reports the change"
    assert result["changed"]
    assert result["validated_with"] == ""
    rc, result = run_module(tmp_path, env, settings=SETTINGS, dockerd=missing, validate=False)
    assert rc == 0, result
    assert (env["etc"] / "daemon.json").exists()


def test_settings_that_json_cannot_hold(tmp_path, env):
    rc, result = run_module(tmp_path, env, settings={"a": "ok"}, path=str(tmp_path / "x" / "daemon.json"))
    assert rc == 0, result
    rc, result = run_module(tmp_path, env, settings=["not", "a", "dict"])
    assert rc == 1
    assert "settings" in result["msg"]


def test_userland_proxy_fallback(tmp_path, env):
    path = env["etc"] / "daemon.json"
    writable = tmp_path / "route_localnet"
    writable.write_text("0\n")
    settings = {**SETTINGS, "userland-proxy": False}
    rc, result = run_module(
        tmp_path, env, settings=settings, userland_proxy_fallback=True, route_localnet=str(writable)
    )
    assert rc == 0, result
    assert not result["userland_proxy_forced"]
    assert json.loads(path.read_text())["userland-proxy"] is False
    # A kernel setting dockerd cannot write (here: missing) keeps the proxy on, with a warning.
    missing = str(tmp_path / "no-such-setting")
    rc, result = run_module(tmp_path, env, settings=settings, userland_proxy_fallback=True, route_localnet=missing)
    assert rc == 0, result
    assert result["userland_proxy_forced"]
    assert result["changed_keys"] == ["userland-proxy"]
    assert json.loads(path.read_text())["userland-proxy"] is True
    assert "the userland proxy stays on" in json.dumps(result["warnings"])
    # Off by default: the settings are written as given.
    rc, result = run_module(tmp_path, env, settings=settings, route_localnet=missing)
    assert not result["userland_proxy_forced"]
    assert json.loads(path.read_text())["userland-proxy"] is False
