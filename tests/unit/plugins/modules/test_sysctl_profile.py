"""The sysctl_profile module in-process, against a temporary directory standing in for /proc/sys:
an unknown key changes neither the kernel nor the file; the module four ways (check, apply,
idempotent check, idempotent apply); a refused value leaves both as they were."""

from __future__ import annotations

import errno
import functools
import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.apes.infra.plugins.module_utils import _sysctl
from ansible_collections.apes.infra.plugins.modules import sysctl_profile


@pytest.fixture
def proc_sys(tmp_path, monkeypatch):
    root = tmp_path / "proc-sys"
    for key, value in (("net.core.somaxconn", "4096"), ("vm.swappiness", "60")):
        path = root.joinpath(*key.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    monkeypatch.setattr(sysctl_profile, "plan_and_apply", functools.partial(_sysctl.plan_and_apply, proc_sys=str(root)))
    return root


def live(root, key):
    return root.joinpath(*key.split(".")).read_text().strip()


def run(capsys, check=False, **args):
    with patch_module_args({**args, "_ansible_check_mode": check}), pytest.raises(SystemExit):
        sysctl_profile.main()
    return json.loads(capsys.readouterr().out)


def test_an_unknown_key_changes_neither_the_kernel_nor_the_file(proc_sys, tmp_path, capsys):
    dropin = tmp_path / "90-test.conf"
    params = {"net.core.somaxconn": 65535, "vm.swappiness": 10, "net.core.no_such_key": 1}
    for check in (True, False):
        result = run(capsys, check=check, path=str(dropin), parameters=params)
        assert result["failed"]
        assert "this kernel has no parameter net.core.no_such_key" in result["msg"]
        assert result["parameters"]["net.core.somaxconn"]["changed"] is False
        assert live(proc_sys, "net.core.somaxconn") == "4096"
        assert live(proc_sys, "vm.swappiness") == "60"
        assert not dropin.exists()


def test_optional_and_allowed_missing_keys_are_persisted(proc_sys, tmp_path, capsys):
    dropin = tmp_path / "90-test.conf"
    result = run(
        capsys,
        path=str(dropin),
        parameters={"net.core.somaxconn": 65535, "kernel.sysrq": 0},
        optional=["kernel.sysrq"],
    )
    assert not result.get("failed"), result
    assert result["unknown"] == ["kernel.sysrq"]
    assert "kernel.sysrq = 0\n" in dropin.read_text()
    assert live(proc_sys, "net.core.somaxconn") == "65535"
    allowed = run(capsys, path=str(dropin), parameters={"net.core.no_such_key": 1}, allow_missing=True)
    assert allowed["unknown"] == ["net.core.no_such_key"]
    assert dropin.read_text() == "net.core.no_such_key = 1\n"


def test_four_ways(proc_sys, tmp_path, capsys):
    dropin = tmp_path / "90-test.conf"
    args = {"path": str(dropin), "parameters": {"net.core.somaxconn": 65535}, "header": "Managed"}
    check = run(capsys, check=True, **args)
    assert check["changed"]
    assert check["live_changed"] == ["net.core.somaxconn"]
    assert not dropin.exists()
    assert live(proc_sys, "net.core.somaxconn") == "4096"
    applied = run(capsys, **args)
    assert applied["changed"]
    assert dropin.read_text() == "# Managed\nnet.core.somaxconn = 65535\n"
    assert live(proc_sys, "net.core.somaxconn") == "65535"
    assert not run(capsys, check=True, **args)["changed"]
    assert not run(capsys, **args)["changed"]


def test_a_refused_value_leaves_the_kernel_and_the_file(proc_sys, tmp_path, capsys, monkeypatch):
    real_write = _sysctl.write_live

    def write(key, value, root):
        if key == "vm.swappiness":
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(key, value, root)

    monkeypatch.setattr(_sysctl, "write_live", write)
    dropin = tmp_path / "90-test.conf"
    result = run(capsys, path=str(dropin), parameters={"net.core.somaxconn": 65535, "vm.swappiness": 1000})
    assert result["failed"]
    assert "vm.swappiness: the kernel refused value '1000'" in result["msg"]
    assert live(proc_sys, "net.core.somaxconn") == "4096"
    assert not dropin.exists()
