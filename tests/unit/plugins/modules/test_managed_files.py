"""The managed_files module end to end, run as Ansible runs it (a subprocess reading its arguments
from a file), against a temporary directory: the four ways (check, apply, idempotent check,
idempotent apply), validation, secrets, metadata drift and atomic replacement."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
MODULE = ROOT / "plugins" / "modules" / "managed_files.py"
CONFIDENTIAL = "requirepass hunter2-TOPSECRET-7f3a"
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="changing owners needs root")
# A user and group other than root that Debian always has.
OTHER_USER = "nobody"
OTHER_GROUP = "nogroup"


def run_module(tmp_path, check=False, diff=False, **args):
    args_file = tmp_path / "args.json"
    args_file.write_text(
        json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_diff": diff}})
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".collections") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, env=env, check=False
    )
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON from the module: {proc.stdout} {proc.stderr}") from exc
    return proc.returncode, result, proc.stdout


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def listing(directory):
    return sorted(os.listdir(directory))


def request(base):
    return {
        "directories": [
            {"path": str(base / "etc" / "app" / "conf.d"), "mode": "0750"},
            {"path": str(base / "etc" / "app"), "mode": "0755"},
        ],
        "files": [
            {
                "path": str(base / "etc" / "app" / "app.conf"),
                "content": "# managed\nname = café\n",
                "mode": "0640",
                "validate": "grep -q managed %s",
            },
            {"path": str(base / "etc" / "app" / "conf.d" / "extra.conf"), "content": "extra = 1\n", "mode": "0644"},
        ],
        "secret_files": [{"path": str(base / "etc" / "app" / "secret.conf"), "content": CONFIDENTIAL + "\n"}],
        "absent": [str(base / "etc" / "app" / "old.conf"), str(base / "etc" / "app" / "never-existed")],
    }


def test_check_apply_and_idempotence(tmp_path):
    """Check, apply, idempotent check, idempotent apply."""
    (tmp_path / "etc").mkdir()
    app = tmp_path / "etc" / "app"
    args = request(tmp_path)
    expected = [
        str(app / "conf.d"),
        str(app),
        str(app / "app.conf"),
        str(app / "conf.d" / "extra.conf"),
        str(app / "secret.conf"),
    ]

    rc, check, _out = run_module(tmp_path, check=True, diff=True, **args)
    assert rc == 0, check
    assert check["changed"]
    assert check["changed_paths"] == expected, "in input order, directories first"
    assert check["created_paths"] == expected
    assert check["removed_paths"] == []
    assert not app.exists(), "check mode writes nothing"
    assert len(check["diff"]) > 0

    rc, applied, _out = run_module(tmp_path, **args)
    assert rc == 0, applied
    assert applied["changed"]
    assert applied["changed_paths"] == expected
    assert applied["content_changed_paths"] == expected[2:]
    assert (app / "app.conf").read_bytes() == "# managed\nname = café\n".encode()
    assert mode_of(app) == 0o755
    assert mode_of(app / "conf.d") == 0o750
    assert mode_of(app / "app.conf") == 0o640
    assert mode_of(app / "secret.conf") == 0o600, "a new secret file defaults to 0600"
    assert listing(app) == ["app.conf", "conf.d", "secret.conf"], "no candidate left behind"

    before = {p: os.stat(p) for p in expected}
    for check_mode in (True, False):
        rc, again, _out = run_module(tmp_path, check=check_mode, diff=True, **args)
        assert rc == 0, again
        assert not again["changed"]
        assert again["changed_paths"] == []
        assert again["diff"] == []
    for path, st in before.items():
        now = os.stat(path)
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f"{path} was touched"


def test_absent(tmp_path):
    old_file = tmp_path / "old.conf"
    old_file.write_text("x")
    old_dir = tmp_path / "old.d"
    (old_dir / "sub").mkdir(parents=True)
    (old_dir / "sub" / "f").write_text("y")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    paths = [str(old_file), str(old_dir), str(link), str(tmp_path / "never")]
    rc, check, _out = run_module(tmp_path, check=True, diff=True, absent=paths)
    assert rc == 0, check
    assert check["removed_paths"] == paths[:3]
    assert [d["before"] for d in check["diff"]] == ["state: file\n", "state: directory\n", "state: link\n"]
    assert old_dir.exists()
    rc, result, _out = run_module(tmp_path, absent=paths)
    assert rc == 0, result
    assert result["changed_paths"] == paths[:3]
    assert not old_file.exists()
    assert not old_dir.exists()
    assert not os.path.lexists(link)
    rc, result, _out = run_module(tmp_path, absent=paths)
    assert not result["changed"]


def test_failing_validate_leaves_every_live_file_intact(tmp_path):
    first, second = tmp_path / "a.conf", tmp_path / "b.conf"
    ok = [
        {"path": str(first), "content": "good 1\n", "validate": "grep -q good %s"},
        {"path": str(second), "content": "good 2\n", "validate": "grep -q good %s"},
    ]
    assert run_module(tmp_path, files=ok)[0] == 0
    refuse = 'sh -c \'grep -q good "$1" || { echo "refused: no good line in $1" >&2; exit 4; }\' validate %s'
    bad = [
        {"path": str(first), "content": "good 1, changed\n", "validate": "grep -q good %s"},
        {"path": str(second), "content": "bad\n", "validate": refuse},
    ]
    for check_mode in (True, False):
        rc, result, _out = run_module(tmp_path, check=check_mode, files=bad)
        assert rc == 1
        assert result["failed"]
        assert result["msg"].startswith(f"validation of {second} failed")
        assert "exited 4" in result["msg"]
        assert f"refused: no good line in {second}" in result["msg"], "stderr shown, with the live path"
        assert first.read_text() == "good 1\n", "no live file is replaced when one candidate is refused"
        assert second.read_text() == "good 2\n"
        assert listing(tmp_path) == ["a.conf", "args.json", "b.conf"], "no candidate left behind"


def test_candidate_is_written_beside_the_live_file_and_removed(tmp_path):
    target = tmp_path / "etc"
    target.mkdir()
    log = tmp_path / "candidates.log"
    record = f'sh -c \'echo "$1" >> {log}; ls -l "$1" >> {log}.ls\' record %s'
    spec = {"path": str(target / "app.conf"), "content": "v1\n", "mode": "0640", "validate": record}
    rc, result, _out = run_module(tmp_path, files=[spec])
    assert rc == 0, result
    candidate = Path(log.read_text().strip())
    assert candidate.parent == target, "the candidate lives in the target's directory"
    assert candidate.name.startswith(".app.conf.")
    assert candidate.name.endswith(".conf"), "the candidate keeps the extension"
    assert not candidate.exists(), "and is gone afterwards"
    assert (tmp_path / "candidates.log.ls").read_text().startswith("-rw-r-----"), "checked with its final mode"
    assert listing(target) == ["app.conf"]

    # Check mode: a private directory, same file name, removed afterwards.
    log.unlink()
    rc, result, _out = run_module(tmp_path, check=True, files=[{**spec, "content": "v2\n"}])
    assert rc == 0, result
    candidate = Path(log.read_text().strip())
    assert candidate.name == "app.conf"
    assert candidate.parent != target
    assert not candidate.parent.exists()
    assert (target / "app.conf").read_text() == "v1\n"


def test_secret_content_never_appears_in_output(tmp_path):
    path = tmp_path / "users.acl"
    spec = {"path": str(path), "content": CONFIDENTIAL + "\n", "mode": "0600"}
    for check_mode in (True, False):
        rc, result, out = run_module(tmp_path, check=check_mode, diff=True, secret_files=[spec])
        assert rc == 0, result
        assert "hunter2" not in out
        assert result["changed_paths"] == [str(path)]
    assert path.read_text() == CONFIDENTIAL + "\n"

    changed = {**spec, "content": CONFIDENTIAL + "\nuser alice on >alice-password-1234\n"}
    rc, result, out = run_module(tmp_path, diff=True, secret_files=[changed])
    assert rc == 0, result
    assert "hunter2" not in out
    assert "alice-password-1234" not in out
    content_diff = [d for d in result["diff"] if d["before_header"].endswith("(secret)")]
    assert content_diff == [
        {
            "before_header": f"{path} (secret)",
            "after_header": f"{path} (secret)",
            "before": "(secret content)\n",
            "after": "(secret content changed)\n",
        }
    ]

    # A validator that quotes the file in its message: the secret's lines and words are masked.
    quoting = 'sh -c \'echo "bad line: $(head -n 1 "$1")" >&2; exit 1\' validate %s'
    refused = {**spec, "content": CONFIDENTIAL + "\nmore\n", "validate": quoting}
    for check_mode in (True, False):
        rc, result, out = run_module(tmp_path, check=check_mode, diff=True, secret_files=[refused])
        assert rc == 1
        assert f"validation of {path} failed" in result["msg"]
        assert "bad line" in result["msg"]
        assert "hunter2" not in out
    assert path.read_text().startswith(CONFIDENTIAL + "\nuser alice")


def test_mode_drift_is_fixed_without_rewriting(tmp_path):
    path = tmp_path / "app.conf"
    spec = {"path": str(path), "content": "x = 1\n", "mode": "0640"}
    assert run_module(tmp_path, files=[spec])[0] == 0
    path.chmod(0o666)
    inode = os.stat(path).st_ino
    rc, check, _out = run_module(tmp_path, check=True, diff=True, files=[spec])
    assert rc == 0, check
    assert check["changed_paths"] == [str(path)]
    assert check["content_changed_paths"] == []
    assert check["diff"] == [
        {
            "before_header": f"{path} (attributes)",
            "after_header": f"{path} (attributes)",
            "before": "mode: 0666\n",
            "after": "mode: 0640\n",
        }
    ]
    assert mode_of(path) == 0o666
    rc, result, _out = run_module(tmp_path, files=[spec])
    assert rc == 0, result
    assert result["changed"]
    assert result["content_changed_paths"] == []
    assert mode_of(path) == 0o640
    assert os.stat(path).st_ino == inode, "fixed in place, not rewritten"
    # An omitted mode keeps the file's own.
    path.chmod(0o600)
    rc, result, _out = run_module(tmp_path, files=[{"path": str(path), "content": "x = 2\n"}])
    assert rc == 0, result
    assert mode_of(path) == 0o600


@needs_root
def test_owner_drift_is_fixed_without_rewriting(tmp_path):
    path = tmp_path / "app.conf"
    directory = tmp_path / "data"
    spec = {"path": str(path), "content": "x = 1\n", "owner": "root", "group": OTHER_GROUP, "mode": "0640"}
    dirspec = {"path": str(directory), "owner": OTHER_USER, "group": OTHER_GROUP, "mode": "0750"}
    rc, result, _out = run_module(tmp_path, files=[spec], directories=[dirspec])
    assert rc == 0, result
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (0, grp.getgrnam(OTHER_GROUP).gr_gid)
    assert os.stat(directory).st_uid == pwd.getpwnam(OTHER_USER).pw_uid
    os.chown(path, pwd.getpwnam(OTHER_USER).pw_uid, 0)
    os.chown(directory, 0, 0)
    inode = st.st_ino
    rc, result, _out = run_module(tmp_path, diff=True, files=[spec], directories=[dirspec])
    assert rc == 0, result
    assert result["changed_paths"] == [str(directory), str(path)]
    assert result["content_changed_paths"] == []
    file_diff = next(d for d in result["diff"] if d["before_header"] == f"{path} (attributes)")
    assert file_diff["before"] == f"owner: {OTHER_USER}\ngroup: root\n"
    assert file_diff["after"] == f"owner: root\ngroup: {OTHER_GROUP}\n"
    st = os.stat(path)
    assert (st.st_ino, st.st_uid, st.st_gid) == (inode, 0, grp.getgrnam(OTHER_GROUP).gr_gid)
    assert os.stat(directory).st_uid == pwd.getpwnam(OTHER_USER).pw_uid
    # A rewrite keeps the wanted owner too (the candidate is chowned before it replaces the file).
    rc, result, _out = run_module(tmp_path, files=[{**spec, "content": "x = 2\n"}], directories=[dirspec])
    assert rc == 0, result
    assert os.stat(path).st_gid == grp.getgrnam(OTHER_GROUP).gr_gid


def test_diff_of_a_text_file(tmp_path):
    path = tmp_path / "app.conf"
    path.write_text("a = 1\n")
    path.chmod(0o644)
    rc, result, _out = run_module(tmp_path, diff=True, files=[{"path": str(path), "content": "a = 2\n"}])
    assert rc == 0, result
    assert result["diff"] == [
        {"before_header": str(path), "after_header": str(path), "before": "a = 1\n", "after": "a = 2\n"}
    ]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (416, "mode must be a quoted octal string such as '0640', got int 416"),
        (True, "mode must be a quoted octal string"),
        ("u=rw", "is not an octal mode"),
        ("0999", "is not an octal mode"),
    ],
)
def test_bad_modes_fail(tmp_path, mode, message):
    rc, result, _out = run_module(tmp_path, files=[{"path": str(tmp_path / "f"), "content": "", "mode": mode}])
    assert rc == 1
    assert message in result["msg"]
    assert result["msg"].startswith("files[0]: ")
    assert not (tmp_path / "f").exists()


def test_unknown_owner_fails_and_check_mode_warns(tmp_path):
    spec = {"path": str(tmp_path / "f"), "content": "x\n", "owner": "no-such-user-apes"}
    rc, result, _out = run_module(tmp_path, files=[spec])
    assert rc == 1
    assert result["msg"] == "files[0]: unknown owner 'no-such-user-apes' on this host"
    rc, result, _out = run_module(tmp_path, secret_files=[{**spec, "owner": None, "group": "no-such-group-apes"}])
    assert rc == 1
    assert result["msg"] == "secret_files[0]: unknown group 'no-such-group-apes' on this host"
    rc, result, _out = run_module(tmp_path, directories=[{"path": str(tmp_path / "d"), "owner": "no-such-user-apes"}])
    assert rc == 1
    assert result["msg"] == "directories[0]: unknown owner 'no-such-user-apes' on this host"
    # Check mode on a host where the package that creates the user is not installed yet.
    rc, result, _out = run_module(tmp_path, check=True, files=[spec])
    assert rc == 0, result
    assert result["changed_paths"] == [spec["path"]]
    assert "does not exist on this host yet" in json.dumps(result["warnings"])
    assert not (tmp_path / "f").exists()


def test_bad_requests_fail_before_any_change(tmp_path):
    f = str(tmp_path / "f")
    cases = [
        ({"files": [{"path": "relative", "content": ""}]}, "files[0]: path must be absolute"),
        ({"files": [{"path": f, "content": ""}], "absent": [f]}, "absent[0]: " + f + " is already listed as files[0]"),
        (
            {"files": [{"path": str(tmp_path / "d" / "f"), "content": ""}], "absent": [str(tmp_path / "d")]},
            "absent[0]: removing",
        ),
        ({"files": [{"path": f, "content": "", "validate": "true"}]}, "validate must contain %s"),
        (
            {"files": [{"path": str(tmp_path / "missing" / "f"), "content": ""}]},
            "does not exist; list it under directories",
        ),
        ({"files": [{"path": str(tmp_path), "content": ""}]}, "exists and is a directory"),
    ]
    for args, message in cases:
        rc, result, _out = run_module(tmp_path, **args)
        assert rc == 1, args
        assert message in result["msg"], result["msg"]
    assert listing(tmp_path) == ["args.json"]


def test_symlink_is_followed(tmp_path):
    real = tmp_path / "real.conf"
    real.write_text("old\n")
    link = tmp_path / "link.conf"
    link.symlink_to(real)
    rc, result, _out = run_module(tmp_path, files=[{"path": str(link), "content": "new\n"}])
    assert rc == 0, result
    assert link.is_symlink()
    assert real.read_text() == "new\n"
    assert result["changed_paths"] == [str(link)]
