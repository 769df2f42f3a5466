"""Unit tests for the apes.infra.weak_secrets filter."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.filter.weak_secrets import weak_secrets

GOOD = "a-long-enough-secret-1"


def test_usable_secrets_are_not_listed():
    assert weak_secrets([["a", GOOD], ["b", "x" * 16]]) == []


@pytest.mark.parametrize(
    ("value", "listed"),
    [
        (None, "s"),
        ("", "s"),
        (12345678901234567, "s"),
        ("x" * 15, "s"),
        ("CHANGE-ME", "s"),
        (GOOD + "\n", "s"),
        ("CHANGE-ME-in-the-vault-1", "s (the CHANGE-ME placeholder)"),
        ("a-real-secret-but-change-me", "s (the CHANGE-ME placeholder)"),
    ],
    ids=["none", "empty", "not-a-string", "short", "short-placeholder", "line-break", "placeholder", "any-case"],
)
def test_each_weakness_lists_the_name_once(value, listed):
    assert weak_secrets([["s", value]]) == [listed]


def test_order_minimum_and_forbidden_characters_are_kept():
    pairs = [["first", "x" * 11], ["second", GOOD], ["third", GOOD + "'"]]
    assert weak_secrets(pairs, min_length=12) == ["first"]
    assert weak_secrets(pairs, min_length=12, forbidden="'\"\r\n") == ["first", "third"]


@pytest.mark.parametrize("pairs", [{"a": GOOD}, [["a"]], ["a"]])
def test_anything_but_pairs_is_an_error(pairs):
    with pytest.raises(AnsibleFilterError, match="pairs"):
        weak_secrets(pairs)
