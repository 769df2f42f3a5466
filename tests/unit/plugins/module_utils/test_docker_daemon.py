"""Unit tests for the pure logic behind apes.infra.docker_daemon_config."""

from __future__ import annotations

import json

import pytest

from ansible_collections.apes.infra.plugins.module_utils._docker_daemon import (
    RELOADABLE_KEYS,
    DaemonConfigError,
    changed_keys,
    parse,
    removed_keys,
    render,
    restart_required,
    supports_validate,
    validation_command,
    validation_result,
    with_userland_proxy_fallback,
)

WANTED = {"live-restore": True, "log-driver": "local", "log-opts": {"max-size": "20m", "max-file": "5"}}


def test_render_is_sorted_and_stable():
    text = render({"b": 1, "a": {"z": 1, "y": 2}})
    assert text == '{\n  "a": {\n    "y": 2,\n    "z": 1\n  },\n  "b": 1\n}\n'
    assert render(json.loads(text)) == text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["live-restore"], "settings must be a mapping, got list"),
        ({1: True}, "settings keys must be strings"),
        ({"x": float("nan")}, "cannot be written as JSON"),
        ({"x": {1, 2}}, "cannot be written as JSON"),
    ],
)
def test_render_refuses_what_json_cannot_hold(settings, message):
    with pytest.raises(DaemonConfigError, match=message):
        render(settings)


@pytest.mark.parametrize("text", [None, "", "  \n", "{broken", "[1]", '"x"'])
def test_parse_treats_unusable_text_as_empty(text):
    assert parse(text) == {}


def test_changed_keys_ignores_formatting():
    assert changed_keys(json.dumps(WANTED, indent=8), WANTED) == []


def test_changed_keys_nested_added_removed_and_type_changes():
    live = {"debug": True, "live-restore": "true", "log-driver": "local", "log-opts": {"max-size": "10m"}}
    assert changed_keys(json.dumps(live), WANTED) == ["debug", "live-restore", "log-opts"]


def test_no_file_means_every_key_changed():
    assert changed_keys(None, WANTED) == ["live-restore", "log-driver", "log-opts"]


def test_restart_required_only_for_keys_dockerd_does_not_reload():
    assert not restart_required([])
    assert not restart_required(["live-restore", "debug", "labels"])
    assert restart_required(["live-restore", "log-opts"])
    assert restart_required(["debug"], reloadable=["labels"])
    # A reload applies only keys present in the file: taking one out needs a restart.
    assert restart_required(["labels"], removed=["labels"])


def test_removed_keys():
    assert removed_keys(json.dumps({"labels": ["a=b"], "debug": True}), {"debug": False}) == ["labels"]
    assert removed_keys(None, {"debug": True}) == []
    assert "log-driver" not in RELOADABLE_KEYS


def test_supports_validate():
    assert supports_validate("      --validate    Validate daemon configuration and exit\n")
    assert not supports_validate("Usage: dockerd [OPTIONS]\n  --config-file string\n")
    assert not supports_validate(None)


def test_validation_commands():
    flags = ["-H", "fd://", "--containerd=/run/containerd/containerd.sock"]
    assert validation_command("/usr/sbin/dockerd", "/etc/docker/x", flags, native=True) == [
        "/usr/sbin/dockerd",
        "--validate",
        *flags,
        "--config-file",
        "/etc/docker/x",
    ]
    assert validation_command("/usr/bin/dockerd", "/etc/docker/.daemon.json.x", [], native=False) == [
        "unshare",
        "--user",
        "/usr/bin/dockerd",
        "--config-file",
        "/etc/docker/.daemon.json.x",
    ]


def test_validation_result_native():
    assert validation_result(True, 0, "configuration OK\n", "") == (True, "configuration OK")
    refused = "unable to configure the Docker daemon with file /tmp/c: the following directives don't match: bogus"
    assert validation_result(True, 1, "", refused + "\n") == (False, refused)


def test_validation_result_user_namespace():
    not_root = (
        'time="2026-01-01T00:00:00Z" level=info msg="Starting up"\n'
        "dockerd needs to be started with root privileges. To run dockerd in rootless mode ...\n"
    )
    assert validation_result(False, 1, "", not_root) == (True, "configuration OK")
    conflict = "unable to configure the Docker daemon with file /tmp/c: the following directives are specified both"
    assert validation_result(False, 1, "", conflict) == (False, conflict)
    assert validation_result(False, 1, "", "") == (False, "dockerd exited with 1 and no message")
    # Success is only the not-root stop: a clean exit without it means the check did not run.
    assert validation_result(False, 0, "", "") == (False, "dockerd exited with 0 and no message")


def test_userland_proxy_fallback():
    off = {"userland-proxy": False, "live-restore": True}
    assert with_userland_proxy_fallback(off, route_localnet_writable=True) == (off, False)
    assert with_userland_proxy_fallback(off, route_localnet_writable=False) == (
        {"userland-proxy": True, "live-restore": True},
        True,
    )
    # Nothing to do when the proxy is on or not mentioned (dockerd's default is on).
    assert with_userland_proxy_fallback({"userland-proxy": True}, False) == ({"userland-proxy": True}, False)
    assert with_userland_proxy_fallback({}, False) == ({}, False)
    assert off["userland-proxy"] is False, "the input is not modified"
