"""The host_probe module end to end, run as Ansible runs it (a subprocess reading its arguments
from a file): for real on this machine (dpkg, files, the kernel's addresses, systemctl as it is
here), and with stand-in dpkg-query and systemctl that log their calls, to prove one process each."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
MODULE = ROOT / "plugins" / "modules" / "host_probe.py"
SBIN = ("/sbin", "/usr/sbin", "/usr/local/sbin")  # where AnsibleModule.get_bin_path also looks

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="dpkg-query is not installed here")

STANDIN = r"""#!{python}
import json, os, sys
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\n")
sys.stdout.write(open({output!r}).read())
sys.exit({rc})
"""

SYSTEMCTL_OUTPUT = """Id=ssh.service
LoadState=loaded
ActiveState=active
SubState=running
UnitFileState=enabled
MainPID=812
InvocationID=4c1d0b2a9e8f47d6b5a4c3d2e1f0a9b8
FragmentPath=/lib/systemd/system/ssh.service
NeedDaemonReload=no

Id=nosuch.service
LoadState=not-found
ActiveState=inactive
SubState=dead
UnitFileState=
MainPID=0
InvocationID=
FragmentPath=
NeedDaemonReload=no
"""


def run_module(tmp_path, check=False, path=None, **args):
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}))
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT / ".collections") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        STANDIN_LOG=str(tmp_path / "calls.log"),
    )
    if path is not None:
        env["PATH"] = path
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, env=env, check=False
    )
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON from the module: {proc.stdout} {proc.stderr}") from exc


def standin(bin_dir: Path, name: str, output: str, rc: int = 0) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / f"{name}.out").write_text(output)
    script = bin_dir / name
    script.write_text(STANDIN.format(python=sys.executable, output=str(bin_dir / f"{name}.out"), rc=rc))
    script.chmod(0o755)


def calls(tmp_path):
    log = tmp_path / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@needs_dpkg
@pytest.mark.parametrize("check", [False, True])
def test_real_probe_of_this_machine(tmp_path, check):
    conf = tmp_path / "app.conf"
    conf.write_text("x = 1\n")
    conf.chmod(0o640)
    rc, result = run_module(
        tmp_path,
        check=check,
        packages=["dpkg", "no-such-package-apes"],
        units=["ssh.service"],
        files=[str(conf), str(tmp_path), str(tmp_path / "missing")],
    )
    assert rc == 0, result
    assert result["changed"] is False
    assert result["packages"]["dpkg"]["installed"] is True
    assert result["packages"]["dpkg"]["version"]
    assert result["packages"]["no-such-package-apes"] == {"installed": False, "version": None, "status": None}
    assert result["files"][str(conf)]["mode"] == "0640"
    assert result["files"][str(conf)]["sha1"] == hashlib.sha1(b"x = 1\n", usedforsecurity=False).hexdigest()
    assert result["files"][str(tmp_path)]["isdir"] is True
    assert result["files"][str(tmp_path / "missing")]["exists"] is False

    host = result["host"]
    assert host["hostname"] == socket.gethostname()
    assert host["os_id"]
    assert all(isinstance(a, str) and not a.startswith("127.") and a != "::1" for a in host["addresses"])
    assert host["architecture"] == os.uname().machine

    # systemctl answers only where systemd is PID 1 (/run/systemd/system exists then).
    if os.path.isdir("/run/systemd/system"):
        assert "units" not in result["unavailable"], result["unavailable"]
        assert result["units"]["ssh.service"]["exists"] in (True, False)
    else:
        assert result["units"] == {}
        assert result["unavailable"]["units"], "the reason is reported"


def test_one_process_for_all_packages_and_all_units(tmp_path):
    bin_dir = tmp_path / "bin"
    standin(bin_dir, "dpkg-query", "bash\tbash\tamd64\tinstall ok installed\t5.2.15-2+b8\n", rc=1)
    standin(bin_dir, "systemctl", SYSTEMCTL_OUTPUT)
    rc, result = run_module(
        tmp_path,
        path=str(bin_dir) + os.pathsep + os.environ["PATH"],
        packages=["bash", "nosuch", "bash"],
        units=["ssh.service", "nosuch.service"],
    )
    assert rc == 0, result
    logged = calls(tmp_path)
    assert [c[0] for c in logged] == ["dpkg-query", "systemctl"], "one dpkg-query and one systemctl"
    assert logged[0][-3:] == ["--", "bash", "nosuch"], "every package in the one call, duplicates dropped"
    assert logged[1][1:3] == ["show", "--no-pager"]
    assert logged[1][3].startswith("--property=Id,LoadState,ActiveState,SubState,UnitFileState,MainPID,")
    assert logged[1][-3:] == ["--", "ssh.service", "nosuch.service"]
    assert result["packages"] == {
        "bash": {"installed": True, "version": "5.2.15-2+b8", "status": "installed"},
        "nosuch": {"installed": False, "version": None, "status": None},
    }
    assert result["units"]["ssh.service"]["active"] is True
    assert result["units"]["ssh.service"]["main_pid"] == 812
    assert result["units"]["nosuch.service"]["exists"] is False
    assert result["unavailable"] == {}


def test_nothing_asked_runs_nothing(tmp_path):
    bin_dir = tmp_path / "bin"
    standin(bin_dir, "dpkg-query", "")
    standin(bin_dir, "systemctl", "")
    rc, result = run_module(tmp_path, path=str(bin_dir) + os.pathsep + os.environ["PATH"])
    assert rc == 0, result
    assert calls(tmp_path) == []
    assert result["packages"] == result["units"] == result["files"] == result["commands"] == {}


def test_systemd_not_running_is_reported(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # What systemctl prints on stderr where PID 1 is not systemd.
    script = bin_dir / "systemctl"
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "sys.stderr.write(\"System has not been booted with systemd as init system (PID 1). Can't operate.\\n"
        'Failed to connect to bus: Host is down\\n")\nsys.exit(1)\n'
    )
    script.chmod(0o755)
    rc, result = run_module(tmp_path, path=str(bin_dir) + os.pathsep + os.environ["PATH"], units=["ssh.service"])
    assert rc == 0, result
    assert result["units"] == {}
    assert result["unavailable"]["units"].startswith("System has not been booted with systemd")


@pytest.mark.skipif(
    any(os.path.exists(os.path.join(d, "systemctl")) for d in SBIN), reason="systemctl is in an sbin directory here"
)
def test_systemctl_missing_is_reported(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    rc, result = run_module(tmp_path, path=str(empty), units=["ssh.service"], packages=["bash"])
    assert rc == 0, result
    assert result["unavailable"]["units"] == "systemctl not found: this host does not run systemd"
    assert result["units"] == {}
    if not any(os.path.exists(os.path.join(d, "dpkg-query")) for d in SBIN):
        assert result["unavailable"]["packages"] == "dpkg-query not found: not a Debian host"


def test_commands(tmp_path):
    rc, result = run_module(
        tmp_path,
        check=True,
        commands=[
            {"name": "echo", "argv": ["echo", "$HOME", "~", "a b"]},
            {"name": "fails", "argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]},
            {"name": "missing", "argv": ["no-such-program-apes", "--version"]},
            {"name": "missing_path", "argv": [str(tmp_path / "nothing")]},
        ],
    )
    assert rc == 0, result
    assert result["commands"]["echo"] == {"rc": 0, "stdout": "$HOME ~ a b", "stderr": ""}, "no shell, no expansion"
    assert result["commands"]["fails"] == {"rc": 3, "stdout": "out", "stderr": "err"}
    assert result["commands"]["missing"]["rc"] == 127
    assert "command not found" in result["commands"]["missing"]["stderr"]
    assert result["commands"]["missing_path"]["rc"] == 127


def test_bad_requests_fail_clearly(tmp_path):
    rc, result = run_module(tmp_path, packages=["redis*"])
    assert rc == 1
    assert "packages: 'redis*' is not a Debian package name" in result["msg"]
    rc, result = run_module(tmp_path, files=["relative"])
    assert rc == 1
    assert "absolute" in result["msg"]
    rc, result = run_module(tmp_path, commands=[{"name": "a", "argv": ["true"]}, {"name": "a", "argv": ["false"]}])
    assert rc == 1
    assert "the names a are given more than once" in result["msg"]
    rc, result = run_module(tmp_path, commands=[{"name": "a", "argv": []}])
    assert rc == 1
    assert "empty argv" in result["msg"]
