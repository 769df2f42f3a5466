"""Unit tests for the apes.infra.docker_key_fingerprints filter (fixtures shared with module_utils)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.filter.docker_key_fingerprints import (
    FilterModule,
    docker_key_fingerprints,
)

FIXTURES = Path(__file__).resolve().parents[1] / "module_utils" / "fixtures" / "docker_openpgp"
ED25519 = (FIXTURES / "ed25519-with-subkey.asc").read_text()
RSA2048 = (FIXTURES / "rsa2048.asc").read_text()
ED25519_FPR = "3F6724E39736F43128894BD0C625D42F56891FBE"
RSA2048_FPR = "BABF68B476C4506A8E6AAEA7B58A1BFCAAD2C0DB"


def test_registered_under_its_name():
    assert FilterModule().filters() == {"docker_key_fingerprints": docker_key_fingerprints}


def test_lists_primary_fingerprints():
    assert docker_key_fingerprints(ED25519) == [ED25519_FPR]


def test_expected_fingerprint_in_any_spelling():
    spaced = " ".join(ED25519_FPR[i : i + 4] for i in range(0, 40, 4)).lower()
    assert docker_key_fingerprints(ED25519, expected=spaced) is True


def test_wrong_key_is_refused_naming_both_fingerprints():
    with pytest.raises(AnsibleFilterError) as exc:
        docker_key_fingerprints(RSA2048, expected=ED25519_FPR)
    assert RSA2048_FPR in str(exc.value)
    assert ED25519_FPR in str(exc.value)
    assert "not trusted" in str(exc.value)


def test_appended_second_key_is_refused():
    with pytest.raises(AnsibleFilterError, match="expected only"):
        docker_key_fingerprints(ED25519 + RSA2048, expected=ED25519_FPR)


def test_subkey_fingerprint_does_not_stand_for_the_primary_key():
    with pytest.raises(AnsibleFilterError, match="expected only"):
        docker_key_fingerprints(ED25519, expected="59DF0B0B69CCB4F547C0DD92AFE79827F9D8ED3C")


@pytest.mark.parametrize(
    ("text", "expected", "message"),
    [
        ("not a key", None, "no ASCII-armored OpenPGP public key"),
        (ED25519, "0EBFCD88", "not a full OpenPGP fingerprint"),
    ],
)
def test_errors_become_filter_errors(text, expected, message):
    with pytest.raises(AnsibleFilterError, match=message):
        docker_key_fingerprints(text, expected=expected)
