"""Unit tests for the helpers behind apes.infra.managed_files."""

from __future__ import annotations

import pytest

from ansible_collections.apes.infra.plugins.module_utils._managed_files import (
    MASK,
    ManagedFilesError,
    attribute_lines,
    check_path,
    mask_secret,
    parse_mode,
    resolve_group,
    resolve_owner,
    text_for_diff,
    validate_argv,
)


@pytest.mark.parametrize(("value", "mode"), [("0640", 0o640), ("640", 0o640), ("2750", 0o2750), ("01777", 0o1777)])
def test_parse_mode(value, mode):
    assert parse_mode(value, "x") == mode


@pytest.mark.parametrize("value", [416, 1.5, True, "rw-r-----", "0o640", "12345", "8"])
def test_parse_mode_refuses(value):
    with pytest.raises(ManagedFilesError, match=r"^files\[1\]: mode"):
        parse_mode(value, "files[1]")


def test_parse_mode_none_keeps():
    assert parse_mode(None, "x") is None


def test_owners_and_groups():
    assert resolve_owner("root", "x") == 0
    assert resolve_group("root", "x") == 0
    assert resolve_owner("4242", "x") == 4242, "a number without a name is taken as a number"
    assert resolve_owner(None, "x") is None
    with pytest.raises(ManagedFilesError, match=r"^files\[0\]: unknown owner 'no-such-user-apes'"):
        resolve_owner("no-such-user-apes", "files[0]")


def test_check_path():
    assert check_path("/etc//app/", "x") == "/etc/app"
    for bad in ("etc/app", "", "/"):
        with pytest.raises(ManagedFilesError):
            check_path(bad, "x")


def test_validate_argv_keeps_paths_with_spaces_whole():
    assert validate_argv("visudo -cf %s", "/etc/sudoers.d/.a b.x", "x") == ["visudo", "-cf", "/etc/sudoers.d/.a b.x"]
    assert validate_argv("sh -c 'test -s \"$1\"' v %s", "/t", "x") == ["sh", "-c", 'test -s "$1"', "v", "/t"]
    with pytest.raises(ManagedFilesError, match="must contain %s"):
        validate_argv("visudo -c", "/t", "x")
    with pytest.raises(ManagedFilesError, match="cannot be split"):
        validate_argv("sh -c 'unclosed %s", "/t", "x")


def test_mask_secret():
    hidden = "user default off\nuser app on >s3cret-pass ~* +@all\nmasterauth=other-s3cret\n"
    message = "line 2: 'user app on >s3cret-pass ~* +@all' is wrong; s3cret-pass again, 'other-s3cret'"
    masked = mask_secret(message, hidden)
    assert "s3cret" not in masked
    assert masked.startswith("line 2: '")
    assert MASK in masked
    assert mask_secret("", hidden) == ""
    assert mask_secret("plain", "") == "plain"


def test_attribute_lines_and_text_for_diff():
    assert attribute_lines({"mode": "0640", "owner": None, "group": "redis"}) == "mode: 0640\ngroup: redis\n"
    assert text_for_diff(None) == ""
    assert text_for_diff("é\n".encode()) == "é\n"
    assert text_for_diff(b"\xff\xfe") == "(binary content, 2 bytes)\n"
