"""Unit tests for the summary logic of apes.infra.pgbackrest_info, on JSON recorded from real
pgBackRest 2.45 (Debian 12) and 2.55.1 (Debian 13) runs: one stanza with a full, a differential and
an incremental backup (info-*.json), a stanza with no backup yet (info-empty-*), a missing stanza."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.apes.infra.plugins.module_utils._pgbackrest import (
    InfoError,
    freshness_problems,
    parse_duration,
    summarize,
)

FIXTURES = Path(__file__).resolve().parents[1] / "modules" / "fixtures" / "pgbackrest"
VERSIONS = ["2.45", "2.55.1"]


def load(name, version):
    return json.loads((FIXTURES / f"{name}-{version}.json").read_text())


@pytest.mark.parametrize("version", VERSIONS)
def test_newest_backup_per_type(version):
    data = load("info", version)
    stanza = summarize(data, now=data[0]["backup"][-1]["timestamp"]["stop"] + 60)["main"]
    assert stanza["ok"] is True
    assert stanza["status_message"] == "ok"
    assert stanza["backup_count"] == 3
    full, diff, incr = (stanza["newest"][t] for t in ("full", "diff", "incr"))
    assert full["label"].endswith("F")
    assert diff["label"].endswith("D")
    assert diff["prior"] == full["label"]
    assert incr["label"].endswith("I")
    assert incr["prior"] == diff["label"]
    assert stanza["latest"]["label"] == incr["label"]
    assert stanza["age_seconds"] == 60
    assert full["repository_size"] > 0
    assert full["size"] >= full["repository_size"], "lz4 compresses the test table"
    assert full["stop"].endswith("Z")
    assert stanza["backups_with_errors"] == []
    assert stanza["cipher"] == "aes-256-cbc"


@pytest.mark.parametrize("version", VERSIONS)
def test_archive_range(version):
    data = load("info", version)
    archive = summarize(data, now=0)["main"]["archive"]
    assert archive["min"] == "000000010000000000000001"
    assert archive["max"] >= archive["min"]
    assert archive["id"].endswith("-1")


@pytest.mark.parametrize("version", VERSIONS)
def test_stanza_without_backups(version):
    stanza = summarize(load("info-empty", version), now=0)["main"]
    assert stanza["ok"] is False
    assert stanza["status_code"] == 2
    assert stanza["latest"] is None
    assert stanza["newest"] == {"full": None, "diff": None, "incr": None}
    assert freshness_problems({"main": stanza}, 3600) == ["stanza main: no backup in the repository (no valid backups)"]


@pytest.mark.parametrize("version", VERSIONS)
def test_missing_stanza(version):
    stanza = summarize(load("info-missing", version), now=0)["nope"]
    assert stanza["status_code"] == 1
    assert stanza["status_message"] == "missing stanza path"


@pytest.mark.parametrize("version", VERSIONS)
def test_freshness(version):
    data = load("info", version)
    stop = data[0]["backup"][-1]["timestamp"]["stop"]
    fresh = summarize(data, now=stop + 3600)
    assert freshness_problems(fresh, 2 * 3600) == []
    stale = summarize(data, now=stop + 3 * 3600)
    problems = freshness_problems(stale, 2 * 3600)
    assert len(problems) == 1
    assert problems[0].startswith("stanza main: newest backup ")
    assert "10800 s ago, older than max_age (7200 s)" in problems[0]


def test_error_flag_reported():
    data = load("info", "2.55.1")
    data[0]["backup"][0]["error"] = True
    stanza = summarize(data, now=0)["main"]
    assert stanza["backups_with_errors"] == [data[0]["backup"][0]["label"]]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("45m", 2700), ("26h", 93600), ("8d", 691200), ("2w", 1209600)],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "abc", "1y", "-5m", 0, "0h", True, "26 hours"])
def test_parse_duration_refuses(value):
    with pytest.raises(InfoError, match="max_age must be"):
        parse_duration(value)


def test_not_a_list():
    with pytest.raises(InfoError, match="JSON list"):
        summarize({"name": "main"}, now=0)
