"""Unit tests for the apes.infra.docker_daemon_plan filter: the module's decisions, on the controller."""

from __future__ import annotations

import hashlib
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.filter.docker_daemon_plan import FilterModule, docker_daemon_plan
from ansible_collections.apes.infra.plugins.module_utils._docker_daemon import RELOADABLE_KEYS, render

SETTINGS = {"log-driver": "local", "live-restore": True, "userland-proxy": False}


def test_registered_under_its_name():
    assert FilterModule().filters() == {"docker_daemon_plan": docker_daemon_plan}


def test_unchanged_file():
    plan = docker_daemon_plan(SETTINGS, render(SETTINGS), RELOADABLE_KEYS)
    assert plan["changed"] is False
    assert plan["changed_keys"] == []
    assert plan["sha1"] == hashlib.sha1(render(SETTINGS).encode(), usedforsecurity=False).hexdigest()
    # host_probe strips the trailing newline of a command's output.
    assert docker_daemon_plan(SETTINGS, render(SETTINGS).rstrip("\n"), RELOADABLE_KEYS)["changed"] is False


def test_a_reloadable_key_is_a_reload_and_its_removal_a_restart():
    labelled = {**SETTINGS, "labels": ["a=b"]}
    added = docker_daemon_plan(labelled, render(SETTINGS), RELOADABLE_KEYS)
    assert (added["changed"], added["changed_keys"], added["restart_required"]) == (True, ["labels"], False)
    removed = docker_daemon_plan(SETTINGS, render(labelled), RELOADABLE_KEYS)
    assert (removed["changed"], removed["restart_required"]) == (True, True)


def test_other_keys_and_a_new_file_restart():
    assert docker_daemon_plan({**SETTINGS, "log-driver": "json-file"}, render(SETTINGS), RELOADABLE_KEYS)[
        "restart_required"
    ]
    new = docker_daemon_plan(SETTINGS, None, RELOADABLE_KEYS)
    assert new["changed"]
    assert new["restart_required"]


def test_userland_proxy_fallback_where_route_localnet_is_read_only():
    plan = docker_daemon_plan(SETTINGS, render(SETTINGS), RELOADABLE_KEYS, False, True)
    assert plan["userland_proxy_forced"] is True
    assert json.loads(plan["content"])["userland-proxy"] is True
    assert plan["changed_keys"] == ["userland-proxy"]
    assert "userland-proxy: false needs a writable /proc/sys/net" in plan["warning"]
    kept = docker_daemon_plan(SETTINGS, render(SETTINGS), RELOADABLE_KEYS, True, True)
    assert kept["userland_proxy_forced"] is False
    assert kept["changed"] is False
    assert kept["warning"] is None


@pytest.mark.parametrize("settings", [["a"], {"bad": float("nan")}])
def test_bad_settings_are_refused(settings):
    with pytest.raises(AnsibleFilterError, match="docker_daemon_plan"):
        docker_daemon_plan(settings, "", RELOADABLE_KEYS)
