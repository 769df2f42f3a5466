"""Unit tests for the apes.infra.config_set filter."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.filter import config_set as module

config_set = module.config_set

LOGIN_DEFS = """# login.defs
UMASK\t\t022
#
# SHA_CRYPT_MIN_ROUNDS and SHA_CRYPT_MAX_ROUNDS are used by chpasswd
#SHA_CRYPT_MIN_ROUNDS 5000
#SHA_CRYPT_MAX_ROUNDS 5000
ENCRYPT_METHOD SHA512
PASS_MAX_DAYS\t99999
"""


def test_registered():
    assert module.FilterModule().filters() == {"config_set": config_set}


def test_replaces_inserts_beside_examples_and_is_idempotent():
    settings = {"UMASK": "027", "SHA_CRYPT_MIN_ROUNDS": 640000, "SHA_CRYPT_MAX_ROUNDS": 640000, "NEW_KEY": "x"}
    result = config_set(LOGIN_DEFS, settings)
    assert result == (
        "# login.defs\n"
        "UMASK 027\n"
        "#\n"
        "# SHA_CRYPT_MIN_ROUNDS and SHA_CRYPT_MAX_ROUNDS are used by chpasswd\n"
        "#SHA_CRYPT_MIN_ROUNDS 5000\n"
        "SHA_CRYPT_MIN_ROUNDS 640000\n"
        "#SHA_CRYPT_MAX_ROUNDS 5000\n"
        "SHA_CRYPT_MAX_ROUNDS 640000\n"
        "ENCRYPT_METHOD SHA512\n"
        "PASS_MAX_DAYS\t99999\n"
        "NEW_KEY x\n"
    )
    assert config_set(result, settings) == result


def test_later_duplicates_are_commented_out():
    text = "a = 1\nb = 2\n  a=3\n"
    assert config_set(text, {"a": "9"}, separator=" = ") == "a = 9\nb = 2\n# a=3\n"


def test_key_is_matched_whole():
    # UMASK must not match UMASK_EXTRA, nor a prefix of it.
    text = "UMASK_EXTRA 1\nUMASKX\n"
    assert config_set(text, {"UMASK": "027"}) == "UMASK_EXTRA 1\nUMASKX\nUMASK 027\n"


def test_equals_separated_values():
    text = '# comment\nENABLED="false"\n'
    assert config_set(text, {"ENABLED": '"true"'}, separator="=") == '# comment\nENABLED="true"\n'
    aide = "Checksums = H\nOwnerMode = p+u+g\n"
    assert config_set(aide, {"Checksums": "sha512"}, separator=" = ") == "Checksums = sha512\nOwnerMode = p+u+g\n"


def test_empty_text_and_other_comment_characters():
    assert config_set("", {"k": 1}) == "k 1\n"
    assert config_set("; k 0\n", {"k": 1}, comment=";") == "; k 0\nk 1\n"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ([("a", 1)], "settings must be a mapping"),
        ({"a b": 1}, "'a b' is not a key"),
        ({"": 1}, "'' is not a key"),
        ({"#a": 1}, "is not a key"),
        ({"a": True}, "the value must be a string or a number"),
        ({"a": None}, "the value must be a string or a number"),
        ({"a": [1]}, "the value must be a string or a number"),
        ({"a": "1\n2"}, "on one line"),
    ],
)
def test_refuses_bad_settings(settings, message):
    with pytest.raises(AnsibleFilterError, match=message):
        config_set("a 1\n", settings)
