"""Unit tests for the apes.infra.files_to_change filter: what managed_files would change, predicted on
the controller from a host_probe result."""

from __future__ import annotations

import hashlib

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.filter import files_to_change


def seen(content=None, isdir=False, owner="root", group="otelcol", mode="0640", exists=True):
    sha1 = hashlib.sha1(content.encode(), usedforsecurity=False).hexdigest() if content is not None else None
    return {
        "exists": exists,
        "isdir": isdir,
        "islink": False,
        "owner": owner,
        "group": group,
        "uid": 0,
        "gid": 998,
        "mode": mode,
        "sha1": sha1,
    }


PROBE = {
    "/etc/otelcol/config.yaml": seen("receivers: {}\n"),
    "/etc/otelcol": seen(isdir=True, mode="0750"),
    "/etc/otelcol/missing.conf": seen(exists=False),
}


def test_registered_under_its_name():
    assert files_to_change.FilterModule().filters() == {"files_to_change": files_to_change.files_to_change}


def test_what_matches_is_left_out():
    entries = [
        {"path": "/etc/otelcol", "owner": "root", "group": "otelcol", "mode": "0750"},
        {"path": "/etc/otelcol/config.yaml", "content": "receivers: {}\n", "owner": "root", "mode": "0640"},
    ]
    assert files_to_change.files_to_change(entries, PROBE) == []


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"path": "/etc/otelcol/config.yaml", "content": "receivers: {a: 1}\n"}, "content"),
        ({"path": "/etc/otelcol/config.yaml", "content": "receivers: {}\n", "owner": "otelcol"}, "owner"),
        ({"path": "/etc/otelcol/config.yaml", "content": "receivers: {}\n", "group": "root"}, "group"),
        ({"path": "/etc/otelcol/config.yaml", "content": "receivers: {}\n", "mode": "0600"}, "mode"),
        ({"path": "/etc/otelcol/missing.conf", "content": ""}, "missing"),
        ({"path": "/etc/otelcol/not-probed.conf", "content": ""}, "not probed: the module decides"),
        ({"path": "/etc/otelcol", "content": ""}, "a directory where a file is wanted"),
        ({"path": "/etc/otelcol/config.yaml"}, "a file where a directory is wanted"),
    ],
    ids=lambda v: v if isinstance(v, str) else v["path"],
)
def test_what_differs_is_named(entry, why):
    assert files_to_change.files_to_change([entry], PROBE) == [entry["path"]], why


def test_numbers_for_owner_group_and_mode_and_nested_lists():
    entries = [[{"path": "/etc/otelcol", "owner": "0", "group": 998, "mode": "750"}], []]
    assert files_to_change.files_to_change(entries, PROBE) == []


def test_bad_input_is_refused():
    with pytest.raises(AnsibleFilterError, match="needs a path"):
        files_to_change.files_to_change([{"content": "x"}], {})
    with pytest.raises(AnsibleFilterError, match="must be a dictionary"):
        files_to_change.files_to_change([], [])
