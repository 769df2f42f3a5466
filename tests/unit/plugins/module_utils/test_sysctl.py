"""Unit tests for the pure logic behind apes.infra.sysctl_profile.

The live-value functions take the /proc/sys root as an argument, so a temporary directory
stands in for it: files are keys, a read-only directory is a read-only key.
"""

from __future__ import annotations

import errno

import pytest

from ansible_collections.apes.infra.plugins.module_utils import _sysctl
from ansible_collections.apes.infra.plugins.module_utils._sysctl import (
    SysctlError,
    normalize_value,
    plan_and_apply,
    render_file,
    validate_parameters,
)


def make_key(root, key, value, writable=True):
    path = root.joinpath(*key.split("."))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    if not writable:
        path.chmod(0o444)
    return path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("4096\t131072\t6291456", "4096 131072 6291456"), (" 1 ", "1"), (30, "30"), (0.5, "0.5")],
)
def test_normalize_value(raw, expected):
    assert normalize_value(raw) == expected


def test_validate_accepts_scalars_and_normalizes():
    assert validate_parameters({"vm.swappiness": 10, "net.ipv4.tcp_rmem": "4096  131072 6291456"}) == {
        "vm.swappiness": "10",
        "net.ipv4.tcp_rmem": "4096 131072 6291456",
    }


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"vm.swappiness": [1]}, "vm.swappiness: value must be a string or a number, got list"),
        ({"vm.swappiness": {"a": 1}}, "vm.swappiness: value must be a string or a number, got dict"),
        ({"vm.swappiness": None}, "vm.swappiness: value must be a string or a number, got NoneType"),
        ({"vm.swappiness": True}, "vm.swappiness: value must be a string or a number, got bool"),
        ({"vm.swappiness": "1\n2"}, "vm.swappiness: value must not contain a newline"),
        ({"vm.swappiness": "  "}, "vm.swappiness: value must not be empty"),
        ({"swappiness": 1}, "'swappiness' is not a valid sysctl key"),
        ({"vm.swappiness = 1": 1}, "is not a valid sysctl key"),
    ],
)
def test_validate_refuses_with_the_key_named(params, fragment):
    with pytest.raises(SysctlError) as err:
        validate_parameters(params)
    assert fragment in str(err.value)


def test_validate_refuses_non_mapping():
    with pytest.raises(SysctlError, match="must be a mapping"):
        validate_parameters(["vm.swappiness=1"])


def test_render_file_sorted_with_header():
    text = render_file({"vm.swappiness": "1", "net.core.somaxconn": "4096"}, "Managed\nProfiles: base")
    assert text == "# Managed\n# Profiles: base\nnet.core.somaxconn = 4096\nvm.swappiness = 1\n"


def test_render_file_without_header():
    assert render_file({"a.b": "1"}) == "a.b = 1\n"


def test_plan_applies_writable_keys(tmp_path):
    path = make_key(tmp_path, "net.core.somaxconn", "4096")
    report = plan_and_apply({"net.core.somaxconn": "65535"}, proc_sys=str(tmp_path))
    assert report["net.core.somaxconn"] == {"value": "65535", "previous": "4096", "status": "live", "changed": True}
    assert path.read_text() == "65535"


def test_plan_is_idempotent_with_whitespace(tmp_path):
    make_key(tmp_path, "net.ipv4.tcp_rmem", "4096\t131072\t6291456")
    report = plan_and_apply({"net.ipv4.tcp_rmem": "4096 131072 6291456"}, proc_sys=str(tmp_path))
    assert report["net.ipv4.tcp_rmem"]["status"] == "live"
    assert report["net.ipv4.tcp_rmem"]["changed"] is False


def test_plan_reports_read_only_keys_as_persisted_via_erofs(tmp_path, monkeypatch):
    """A read-only /proc/sys (as in a container) raises EROFS on write."""
    make_key(tmp_path, "vm.swappiness", "60")
    real_open = open

    def read_only_open(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(_sysctl, "open", read_only_open, raising=False)
    report = plan_and_apply({"vm.swappiness": "10"}, proc_sys=str(tmp_path))
    assert report["vm.swappiness"]["status"] == "persisted"
    assert report["vm.swappiness"]["previous"] == "60"


def test_plan_reports_unknown_keys(tmp_path):
    report = plan_and_apply({"net.core.no_such_key": "1"}, proc_sys=str(tmp_path))
    assert report["net.core.no_such_key"]["status"] == "unknown"
    assert report["net.core.no_such_key"]["previous"] is None


def test_check_mode_predicts_without_writing(tmp_path):
    path = make_key(tmp_path, "net.core.somaxconn", "4096")
    report = plan_and_apply({"net.core.somaxconn": "65535"}, proc_sys=str(tmp_path), check_mode=True)
    assert report["net.core.somaxconn"]["changed"] is True
    assert path.read_text() == "4096\n"


def test_apply_live_false_only_reports(tmp_path):
    path = make_key(tmp_path, "net.core.somaxconn", "4096")
    report = plan_and_apply({"net.core.somaxconn": "65535"}, proc_sys=str(tmp_path), apply_live=False)
    assert report["net.core.somaxconn"]["status"] == "persisted"
    assert path.read_text() == "4096\n"


def test_kernel_rewriting_the_value_is_an_error(tmp_path, monkeypatch):
    """If the kernel reads back something else (clamped value), fail naming the key."""
    make_key(tmp_path, "net.core.somaxconn", "4096")
    monkeypatch.setattr(_sysctl, "read_live", lambda key, proc_sys: "4096")
    with pytest.raises(SysctlError, match="net.core.somaxconn: wrote '65535' but the kernel now reports '4096'"):
        plan_and_apply({"net.core.somaxconn": "65535"}, proc_sys=str(tmp_path))


class _CouplingProcSys:
    """Simulates the kernel resetting accept_redirects whenever ip_forward changes."""

    def __init__(self, root):
        self.root = root
        self.fwd = make_key(root, "net.ipv4.ip_forward", "1")
        self.redirects = make_key(root, "net.ipv4.conf.all.accept_redirects", "1")

    def write(self, key, value, proc_sys):
        path = self.root.joinpath(*key.split("."))
        if key == "net.ipv4.ip_forward" and path.read_text().strip() != value:
            self.redirects.write_text("0" if value == "1" else "1")
        path.write_text(value)
        return True


def test_settle_reapplies_keys_reset_by_side_effects(tmp_path, monkeypatch):
    fake = _CouplingProcSys(tmp_path)
    monkeypatch.setattr(_sysctl, "write_live", fake.write)
    wanted = {"net.ipv4.conf.all.accept_redirects": "0", "net.ipv4.ip_forward": "0"}
    report = plan_and_apply(wanted, proc_sys=str(tmp_path))
    assert fake.redirects.read_text().strip() == "0"
    assert fake.fwd.read_text().strip() == "0"
    assert report["net.ipv4.conf.all.accept_redirects"]["changed"] is True
    # A second run finds nothing to do.
    again = plan_and_apply(wanted, proc_sys=str(tmp_path))
    assert not any(e["changed"] for e in again.values())


def test_settle_reports_keys_that_fight(tmp_path, monkeypatch):
    make_key(tmp_path, "vm.dirty_bytes", "0")
    make_key(tmp_path, "vm.dirty_ratio", "20")

    def write(key, value, proc_sys):
        # Like the kernel: setting one of the pair zeroes the other.
        other = "vm.dirty_ratio" if key == "vm.dirty_bytes" else "vm.dirty_bytes"
        tmp_path.joinpath(*key.split(".")).write_text(value)
        tmp_path.joinpath(*other.split(".")).write_text("0")
        return True

    monkeypatch.setattr(_sysctl, "write_live", write)
    with pytest.raises(SysctlError, match="vm.dirty_bytes, vm.dirty_ratio keep being reset"):
        plan_and_apply({"vm.dirty_bytes": "536870912", "vm.dirty_ratio": "10"}, proc_sys=str(tmp_path))


def test_unknown_key_refused_before_any_write(tmp_path):
    """Every key is looked up first: with one unknown, a writable key keeps its value."""
    path = make_key(tmp_path, "net.core.somaxconn", "4096")
    wanted = {"net.core.somaxconn": "65535", "net.core.no_such_key": "1", "net.ipv4.a_typo": "1"}
    with pytest.raises(_sysctl.UnknownKeysError) as err:
        plan_and_apply(wanted, proc_sys=str(tmp_path), missing_ok=["net.ipv4.a_typo"])
    assert err.value.keys == ["net.core.no_such_key"]
    assert "this kernel has no parameter net.core.no_such_key;" in str(err.value)
    assert path.read_text() == "4096\n"
    # The planned report still classifies every key.
    assert err.value.report["net.core.somaxconn"]["status"] == "live"
    assert err.value.report["net.core.somaxconn"]["changed"] is False
    assert err.value.report["net.ipv4.a_typo"]["status"] == "unknown"


def test_missing_ok_lists_the_keys_that_may_be_missing(tmp_path):
    path = make_key(tmp_path, "net.core.somaxconn", "4096")
    report = plan_and_apply(
        {"net.core.somaxconn": "65535", "kernel.sysrq": "0"}, proc_sys=str(tmp_path), missing_ok=["kernel.sysrq"]
    )
    assert report["kernel.sysrq"]["status"] == "unknown"
    assert report["net.core.somaxconn"]["changed"] is True
    assert path.read_text() == "65535"


def test_refused_value_puts_back_what_was_written(tmp_path, monkeypatch):
    """A value the kernel refuses (EINVAL) fails naming the key, and keys written before it in the
    same call get their previous values back."""
    first = make_key(tmp_path, "net.core.a_first", "1")
    make_key(tmp_path, "net.core.b_second", "2")
    real_write = _sysctl.write_live

    def write(key, value, proc_sys):
        if key == "net.core.b_second":
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(key, value, proc_sys)

    monkeypatch.setattr(_sysctl, "write_live", write)
    with pytest.raises(SysctlError, match="net.core.b_second: the kernel refused value '99'") as err:
        plan_and_apply({"net.core.a_first": "10", "net.core.b_second": "99"}, proc_sys=str(tmp_path))
    assert "could not restore" not in str(err.value)
    assert first.read_text() == "1"


def test_a_value_that_cannot_be_put_back_is_named(tmp_path, monkeypatch):
    make_key(tmp_path, "net.core.a_first", "1")
    make_key(tmp_path, "net.core.b_second", "2")
    calls = []

    def write(key, value, proc_sys):
        calls.append((key, value))
        if key == "net.core.b_second" or len(calls) > 2:
            raise OSError(errno.EINVAL, "Invalid argument")
        tmp_path.joinpath(*key.split(".")).write_text(value)
        return True

    monkeypatch.setattr(_sysctl, "write_live", write)
    with pytest.raises(SysctlError, match="could not restore the previous value of net.core.a_first"):
        plan_and_apply({"net.core.a_first": "10", "net.core.b_second": "99"}, proc_sys=str(tmp_path))
