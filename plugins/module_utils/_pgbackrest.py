# Copyright: apes.infra developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure logic for the pgbackrest_info module: summarize `pgbackrest info --output=json`."""

from __future__ import annotations

import re
import time

BACKUP_TYPES = ("full", "diff", "incr")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class InfoError(ValueError):
    """Input that cannot be understood, with a message saying what was wrong."""


def parse_duration(value):
    """Seconds from an int or a string like 90, '90s', '45m', '26h', '8d', '2w'."""
    if isinstance(value, bool):
        raise InfoError(f"max_age must be a number of seconds or a duration like 26h, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise InfoError(f"max_age must be positive, got {value}")
        return value
    match = _DURATION_RE.match(str(value))
    if not match or int(match.group(1)) <= 0:
        raise InfoError(f"max_age must be a positive number of seconds or a duration like 26h, 45m, 8d, got {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _iso(epoch):
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def summarize_backup(backup):
    """One backup entry of pgBackRest's JSON, flattened to what operators look at."""
    info = backup.get("info") or {}
    repo = info.get("repository") or {}
    stamp = backup.get("timestamp") or {}
    archive = backup.get("archive") or {}
    return {
        "label": backup.get("label"),
        "type": backup.get("type"),
        "prior": backup.get("prior"),
        "start": _iso(stamp.get("start")),
        "stop": _iso(stamp.get("stop")),
        "start_epoch": stamp.get("start"),
        "stop_epoch": stamp.get("stop"),
        "size": info.get("size"),
        "delta": info.get("delta"),
        "repository_size": repo.get("size"),
        "repository_delta": repo.get("delta"),
        "wal_start": archive.get("start"),
        "wal_stop": archive.get("stop"),
        "error": bool(backup.get("error", False)),
        "version": (backup.get("backrest") or {}).get("version"),
    }


def summarize_stanza(stanza, now):
    """Status, newest backup per type and overall, WAL archive range, and age of the newest backup."""
    status = stanza.get("status") or {}
    backups = [summarize_backup(b) for b in stanza.get("backup") or []]
    newest = {}
    for kind in BACKUP_TYPES:
        of_kind = [b for b in backups if b["type"] == kind and b["stop_epoch"] is not None]
        newest[kind] = max(of_kind, key=lambda b: b["stop_epoch"]) if of_kind else None
    finished = [b for b in backups if b["stop_epoch"] is not None]
    latest = max(finished, key=lambda b: b["stop_epoch"]) if finished else None
    archives = stanza.get("archive") or []
    # The current database's archive is the last entry (one per database id after upgrades).
    current = archives[-1] if archives else None
    return {
        "name": stanza.get("name"),
        "status_code": status.get("code"),
        "status_message": status.get("message"),
        "ok": status.get("code") == 0,
        "backup_in_progress": bool(((status.get("lock") or {}).get("backup") or {}).get("held", False)),
        "cipher": stanza.get("cipher"),
        "databases": [
            {"id": d.get("id"), "version": d.get("version"), "system_id": d.get("system-id")}
            for d in stanza.get("db") or []
        ],
        "backup_count": len(backups),
        "backups_with_errors": [b["label"] for b in backups if b["error"]],
        "newest": newest,
        "latest": latest,
        "age_seconds": (now - latest["stop_epoch"]) if latest else None,
        "archive": {
            "id": current.get("id") if current else None,
            "min": current.get("min") if current else None,
            "max": current.get("max") if current else None,
        },
    }


def summarize(data, now):
    """{stanza name: summary} from the parsed JSON list that `pgbackrest info --output=json` prints."""
    if not isinstance(data, list):
        raise InfoError("pgbackrest info did not return a JSON list of stanzas")
    return {s.get("name"): summarize_stanza(s, now) for s in data}


def freshness_problems(stanzas, max_age_seconds):
    """Messages for stanzas whose newest backup is missing or older than max_age_seconds."""
    problems = []
    for name in sorted(stanzas):
        stanza = stanzas[name]
        if stanza["latest"] is None:
            problems.append(f"stanza {name}: no backup in the repository ({stanza['status_message']})")
        elif stanza["age_seconds"] > max_age_seconds:
            problems.append(
                f"stanza {name}: newest backup {stanza['latest']['label']} finished {stanza['latest']['stop']},"
                f" {stanza['age_seconds']} s ago, older than max_age ({max_age_seconds} s)"
            )
    return problems
