"""Behaviour of the os_tuning role and the sysctl_profile module in systemd containers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import testinfra
import yaml

DROPIN = "/etc/sysctl.d/90-apes-infra.conf"
HERE = Path(__file__).resolve().parent

# What each instance must get, given its groups (see molecule.yml).
EXPECTED = {
    "apes-os-tuning-debian12": {  # postgresql + redis
        "vm.overcommit_memory": "1",  # redis wins: a host running both gets 1 (README)
        "vm.overcommit_ratio": "80",
        "vm.swappiness": "1",
        "net.core.somaxconn": "65535",
        "net.ipv4.tcp_max_syn_backlog": "65535",
        "net.ipv4.ip_forward": "0",
        "vm.dirty_bytes": "536870912",
    },
    "apes-os-tuning-debian13": {  # docker_host + postgresql
        "vm.overcommit_memory": "2",
        "vm.overcommit_ratio": "80",
        "net.core.somaxconn": "4096",
        "net.ipv4.ip_forward": "1",
        "fs.inotify.max_user_instances": "1024",
    },
}
# User overrides from converge.yml, on both.
OVERRIDES = {"net.ipv4.tcp_rmem": "4096 131072 6291456", "net.ipv4.tcp_fin_timeout": "30"}


PLATFORMS = [p["name"] for p in yaml.safe_load((HERE.parent / "molecule.yml").read_text())["platforms"]]


@pytest.fixture(scope="module")
def instances() -> dict:
    """Every instance as a testinfra host, for tests that run the role once on all of them."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {name: testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory) for name in PLATFORMS}


def dropin(host) -> dict[str, str]:
    content = host.file(DROPIN).content_string
    pairs = {}
    for line in content.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _sep, value = line.partition("=")
        pairs[key.strip()] = value.strip()
    return pairs


def live(host, key: str) -> str:
    return " ".join(host.file("/proc/sys/" + key.replace(".", "/")).content_string.split())


def test_dropin_has_profile_values_and_overrides(host):
    name = host.backend.get_hostname()
    values = dropin(host)
    for key, value in {**EXPECTED[name], **OVERRIDES}.items():
        assert values.get(key) == value, f"{key} in {DROPIN}"
    f = host.file(DROPIN)
    assert f.user == "root"
    assert f.mode == 0o644
    assert "Managed by Ansible" in f.content_string


def test_namespaced_keys_are_live(host):
    name = host.backend.get_hostname()
    for key in ("net.core.somaxconn", "net.ipv4.ip_forward", "net.ipv4.tcp_rmem", "net.ipv4.tcp_fin_timeout"):
        assert live(host, key) == {**EXPECTED[name], **OVERRIDES}.get(key, dropin(host)[key]), key


def test_module_reports_live_and_persisted_keys(host, ansible_module):
    """Check mode on the converged host: nothing to change, and each key classified."""
    name = host.backend.get_hostname()
    wanted = dropin(host)
    header = "\n".join(line[2:] for line in host.file(DROPIN).content_string.splitlines() if line.startswith("# "))
    result = ansible_module(
        host,
        "apes.infra.sysctl_profile",
        {
            "path": DROPIN,
            "parameters": wanted,
            "header": header,
            "optional": ["kernel.yama.ptrace_scope", "kernel.sysrq", "net.core.bpf_jit_harden"],
        },
        check=True,
    )
    params = result["parameters"]
    assert params["net.core.somaxconn"]["status"] == "live"
    # vm.* is host-wide: read-only inside a container, so only the file carries it.
    assert params["vm.swappiness"]["status"] == "persisted"
    assert "vm.swappiness" in result["persisted"]
    assert result["live_changed"] == []
    assert not result["file_changed"], result
    # Keys missing from this kernel are reported, not fatal, because they are optional.
    for key in result["unknown"]:
        assert key in ("kernel.yama.ptrace_scope", "kernel.sysrq", "net.core.bpf_jit_harden")
    assert EXPECTED[name]["vm.overcommit_memory"] == params["vm.overcommit_memory"]["value"]


def test_module_check_apply_and_idempotence(host, ansible_module):
    """The module four ways: check, apply, idempotent check, idempotent apply."""
    path = "/etc/sysctl.d/95-molecule-module-test.conf"
    host.run(f"rm -f {path}")
    original = live(host, "net.ipv4.tcp_keepalive_intvl")
    target = "31" if original != "31" else "32"
    args = {"path": path, "parameters": {"net.ipv4.tcp_keepalive_intvl": int(target)}}
    try:
        check = ansible_module(host, "apes.infra.sysctl_profile", args, check=True)
        assert check["changed"]
        assert check["file_changed"]
        assert check["live_changed"] == ["net.ipv4.tcp_keepalive_intvl"]
        assert not host.file(path).exists, "check mode must not write the file"
        assert live(host, "net.ipv4.tcp_keepalive_intvl") == original, "check mode must not change the kernel"

        applied = ansible_module(host, "apes.infra.sysctl_profile", args)
        assert applied["changed"]
        assert host.file(path).content_string.strip() == f"net.ipv4.tcp_keepalive_intvl = {target}"
        assert live(host, "net.ipv4.tcp_keepalive_intvl") == target

        again_check = ansible_module(host, "apes.infra.sysctl_profile", args, check=True)
        assert not again_check["changed"]
        again = ansible_module(host, "apes.infra.sysctl_profile", args)
        assert not again["changed"]
    finally:
        host.run(f"rm -f {path}; sysctl -q -w net.ipv4.tcp_keepalive_intvl={original}")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"net.core.somaxconn": [1, 2]}, "net.core.somaxconn: value must be a string or a number"),
        ({"net.core.somaxconn": "1\n2"}, "net.core.somaxconn: value must not contain a newline"),
        ({"net.core.somaxconn": True}, "net.core.somaxconn: value must be a string or a number"),
        ({"net.core.no_such_key": 1}, "this kernel has no parameter net.core.no_such_key"),
    ],
)
def test_module_refuses_bad_values_naming_the_key(host, ansible_module, parameters, message):
    path = "/etc/sysctl.d/96-molecule-bad.conf"
    result = ansible_module(host, "apes.infra.sysctl_profile", {"path": path, "parameters": parameters})
    assert result.get("failed"), result
    assert message in result["msg"]
    assert not host.file(path).exists


def test_unknown_key_changes_nothing_live(host, ansible_module):
    """One unknown key next to a valid, writable one: the task fails and the kernel keeps its value
    (every key is looked up before the first write), and no file is written."""
    path = "/etc/sysctl.d/96-molecule-bad.conf"
    original = live(host, "net.ipv4.tcp_keepalive_probes")
    target = "7" if original != "7" else "8"
    try:
        result = ansible_module(
            host,
            "apes.infra.sysctl_profile",
            {"path": path, "parameters": {"net.ipv4.tcp_keepalive_probes": target, "net.core.no_such_key": 1}},
        )
        assert result.get("failed"), result
        assert "this kernel has no parameter net.core.no_such_key" in result["msg"]
        assert live(host, "net.ipv4.tcp_keepalive_probes") == original
        assert not host.file(path).exists
    finally:
        host.run(f"rm -f {path}; sysctl -q -w net.ipv4.tcp_keepalive_probes={original}")


def test_unknown_key_allowed_when_asked(host, ansible_module):
    path = "/etc/sysctl.d/97-molecule-missing.conf"
    try:
        result = ansible_module(
            host,
            "apes.infra.sysctl_profile",
            {"path": path, "parameters": {"net.core.no_such_key": 1}, "allow_missing": True},
        )
        assert not result.get("failed"), result
        assert result["unknown"] == ["net.core.no_such_key"]
        assert "net.core.no_such_key = 1" in host.file(path).content_string
    finally:
        host.run(f"rm -f {path}")


def test_thp_unit_enabled_and_skipped_where_sys_is_read_only(host):
    unit = host.file("/etc/systemd/system/apes-thp.service")
    assert "echo never > /sys/kernel/mm/transparent_hugepage/enabled" in unit.content_string
    assert "ConditionPathIsReadWrite=/sys/kernel/mm/transparent_hugepage" in unit.content_string
    assert host.service("apes-thp.service").is_enabled
    # /sys is read-only in a container: the unit's condition skips it instead of failing.
    show = host.check_output("systemctl show apes-thp.service -p ConditionResult -p Result")
    assert "ConditionResult=no" in show
    assert "Result=success" in show
    # systemd itself finds nothing wrong with the unit we wrote.
    verify = host.run("systemd-analyze verify /etc/systemd/system/apes-thp.service")
    assert verify.rc == 0, verify.stderr


# systemd-analyze security apes-thp.service with the role's sandbox (README, "Sandboxing"); the
# unit measured 5.0 MEDIUM before it, and 1.1 OK after it with systemd-analyze --offline=true.
THP_EXPOSURE_MAX = 1.2


def test_thp_unit_sandbox_rates_ok(host):
    out = host.check_output("systemd-analyze security --no-pager apes-thp.service")
    match = re.search(r"Overall exposure level for apes-thp\.service: ([\d.]+) (\w+)", out)
    assert match, out[-500:]
    print(f"systemd-analyze security apes-thp.service: {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) <= THP_EXPOSURE_MAX, match.group(0)
    assert match.group(2) in ("SAFE", "OK"), match.group(0)
    # Writing /sys/kernel/mm/transparent_hugepage needs /sys writable: no ProtectKernelTunables.
    show = host.check_output("systemctl show apes-thp.service -p ProtectKernelTunables -p ProtectSystem")
    assert "ProtectKernelTunables=no" in show
    assert "ProtectSystem=strict" in show


def test_time_sync_running(host):
    chrony = host.service("chrony")
    assert chrony.is_running
    assert chrony.is_enabled
    sources = host.check_output("chronyc -n sources")
    assert "127.0.0.1" in sources
    assert host.file("/etc/chrony/chrony.conf").contains("^server 127.0.0.1 iburst$")


def test_journal_persistent_with_cap(host):
    conf = host.file("/etc/systemd/journald.conf.d/90-apes-infra.conf").content_string
    assert "Storage=persistent" in conf
    assert "SystemMaxUse=1G" in conf
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert host.file(f"/var/log/journal/{machine_id}").is_directory
    assert host.run(f"ls /var/log/journal/{machine_id}/system.journal").rc == 0


def test_open_file_limits(host):
    show = host.check_output("systemctl show -p DefaultLimitNOFILE -p DefaultLimitNOFILESoft")
    assert "DefaultLimitNOFILE=524288" in show
    assert "DefaultLimitNOFILESoft=65536" in show
    assert host.file("/etc/security/limits.d/90-apes-infra.conf").contains("soft nofile 65536")


def test_bad_input_fails_before_any_change(host, run_playbook):
    """A wrong type, an unknown profile or a value out of range stops the role before it touches the host."""
    name = host.backend.get_hostname()
    before = host.file(DROPIN).content_string
    cases = [
        ({"os_tuning_sysctl_overrides": ["vm.swappiness=5"]}, "os_tuning_sysctl_overrides"),
        ({"os_tuning_profiles": ["base", "mongodb"]}, "os_tuning_profiles"),
        ({"os_tuning_thp_mode": "sometimes"}, "os_tuning_thp_mode"),
        # ranges and relations (tasks/validate.yml): the kernel would refuse these, or pam_limits
        # would silently use the hard limit
        (
            {"os_tuning_nofile_soft": 600000, "os_tuning_nofile_hard": 524288},
            "os_tuning_nofile_soft (600000) must not exceed",
        ),
        ({"os_tuning_nofile_hard": 2000000}, "os_tuning_nofile_hard (2000000) must not exceed fs.nr_open"),
        ({"os_tuning_nofile_soft": 10}, "os_tuning_nofile_soft must be at least 1024"),
        ({"os_tuning_journald_system_max_use": "lots"}, "os_tuning_journald_system_max_use"),
        ({"os_tuning_journald_max_retention": "forever"}, "os_tuning_journald_max_retention"),
    ]
    for extra, variable in cases:
        result = run_playbook(HERE.parent / "converge.yml", extra_vars=extra, limit=name)
        assert result.returncode != 0, f"{extra} was accepted"
        out = result.stdout + result.stderr
        assert "Validating arguments against arg spec" in out
        assert variable in out, out[-2000:]
        assert re.search(r"changed=0\s", out), "nothing may change before validation fails"
    assert host.file(DROPIN).content_string == before


# --- one tag alone, after a change: the change reaches the running system -----------------------


def _journal_max(h) -> str:
    """The size cap journald announced when it last started, normalized: "... max 1.0G, ..." (Debian 12)
    and "... max 1G, ..." (Debian 13) are both "1G"."""
    log = h.check_output("journalctl --no-pager -u systemd-journald")
    found = re.findall(r"System Journal .* max ([0-9.]+)([KMGT])", log)
    return f"{float(found[-1][0]):g}{found[-1][1]}" if found else ""


TAG_CASES = {
    # tag: (extra vars, what the running system shows once it picked the change up, and without it)
    "os_tuning_sysctl": (
        {"os_tuning_sysctl_overrides": {**OVERRIDES, "net.ipv4.tcp_fin_timeout": 31}},
        lambda h: live(h, "net.ipv4.tcp_fin_timeout") == "31",
    ),
    "os_tuning_limits": (
        {"os_tuning_nofile_soft": 65000},
        lambda h: h.check_output("systemctl show -p DefaultLimitNOFILESoft --value") == "65000",
    ),
    "os_tuning_time_sync": (
        {"os_tuning_ntp_servers": ["127.0.0.1", "127.0.0.2"]},
        lambda h: "127.0.0.2" in h.check_output("chronyc -n sources"),
    ),
    "os_tuning_journald": (
        {"os_tuning_journald_system_max_use": "512M"},
        lambda h: _journal_max(h) == "512M",
    ),
    # /sys is read-only here, so the mode itself cannot go live: systemd must run the new unit.
    "os_tuning_thp": (
        {"os_tuning_thp_mode": "madvise"},
        lambda h: (
            "echo madvise >" in h.check_output("systemctl cat apes-thp.service")
            and h.check_output("systemctl show -p NeedDaemonReload --value apes-thp.service") == "no"
        ),
    ),
}


@pytest.mark.parametrize("tag", sorted(TAG_CASES))
def test_one_tag_alone_applies_its_change(tag, instances, run_playbook, monkeypatch, wait_for):
    """Each tag run on its own after a change restarts, re-executes or re-applies what that change
    needs; and the same tag alone brings the converged state back."""
    extra, picked_up = TAG_CASES[tag]
    monkeypatch.setenv("ANSIBLE_RUN_TAGS", tag)
    assert not any(picked_up(h) for h in instances.values()), "the change is already live before the run"
    try:
        result = run_playbook(HERE.parent / "converge.yml", extra_vars=extra)
        assert result.returncode == 0, result.stdout[-3000:]
        for name, h in instances.items():
            # journald writes its new limits to its own journal a moment after it started.
            wait_for(lambda h=h: picked_up(h), timeout=15, what=f"{name} to pick up the change of --tags {tag}")
    finally:
        back = run_playbook(HERE.parent / "converge.yml")
    assert back.returncode == 0, back.stdout[-3000:]
    for name, h in instances.items():
        wait_for(lambda h=h: not picked_up(h), timeout=15, what=f"{name} to be back in the converged state")


def test_check_mode_predicts_and_changes_nothing(instances, run_playbook, monkeypatch):
    """Check and diff mode on the converged hosts: nothing to do; with a change, the diff shows it and
    neither the file nor the running journald changes."""
    monkeypatch.setenv("ANSIBLE_DIFF_ALWAYS", "1")
    steady = run_playbook(HERE.parent / "converge.yml", check=True)
    assert steady.returncode == 0, steady.stdout[-3000:]
    assert all(re.search(rf"^{name}\s+: ok=\d+\s+changed=0\s", steady.stdout, re.M) for name in instances), (
        steady.stdout[-3000:]
    )
    journald = {
        n: h.check_output("systemctl show -p InvocationID --value systemd-journald") for n, h in instances.items()
    }
    conf = "/etc/systemd/journald.conf.d/90-apes-infra.conf"
    predicted = run_playbook(
        HERE.parent / "converge.yml", extra_vars={"os_tuning_journald_system_max_use": "2G"}, check=True
    )
    assert predicted.returncode == 0, predicted.stdout[-3000:]
    assert "-SystemMaxUse=1G" in predicted.stdout
    assert "+SystemMaxUse=2G" in predicted.stdout
    for name, h in instances.items():
        assert re.search(rf"^{name}\s+: ok=\d+\s+changed=[1-9]", predicted.stdout, re.M), predicted.stdout[-3000:]
        assert "SystemMaxUse=1G" in h.file(conf).content_string
        assert h.check_output("systemctl show -p InvocationID --value systemd-journald") == journald[name]
