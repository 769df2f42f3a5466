"""Bad input stops before any change, naming what was wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

testinfra_hosts = ["apes-pgbackrest-db"]

HERE = Path(__file__).resolve().parent.parent
PROJECT = HERE.parents[1]
PASS = {"pgbackrest_cipher_pass": "molecule-only-passphrase-0f5c2b"}


def config_state(host):
    return host.file("/etc/pgbackrest/pgbackrest.conf").md5sum


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "missing required arguments: pgbackrest_cipher_pass"),
        (
            {**PASS, "pgbackrest_repo_group": "no_such_group"},
            "pgbackrest_repo_host: the repository group 'no_such_group' has no host",
        ),
        ({**PASS, "pgbackrest_schedules": {"full": "Sun *-*-* 01:00:00", "weekly": "Mon"}}, "weekly"),
        (
            {**PASS, "pgbackrest_schedules": {"full": "every second tuesday"}},
            "pgbackrest_schedules.full: 'every second tuesday' is not a systemd calendar expression",
        ),
        ({**PASS, "pgbackrest_compress_type": "rar"}, "pgbackrest_compress_type"),
        (
            {**PASS, "pgbackrest_backup_age_on_calendar": "now and then"},
            "pgbackrest_backup_age_on_calendar: 'now and then' is not a systemd calendar expression",
        ),
        ({**PASS, "pgbackrest_backup_max_age": 5}, "pgbackrest_backup_max_age must be at least 60 (seconds), got 5"),
        (
            {**PASS, "pgbackrest_archive_push_queue_max": "four gigs"},
            "pgbackrest_archive_push_queue_max must be a size like 4GB",
        ),
        (
            {"pgbackrest_cipher_pass": "CHANGE-ME (keep a copy off-site: without it the backups are unreadable)"},
            "pgbackrest_cipher_pass must have at least 16 characters",
        ),
        ({"pgbackrest_cipher_pass": "short-pass"}, "pgbackrest_cipher_pass must have at least 16 characters"),
        ({**PASS, "pgbackrest_stanza": "main]\nrepo1-path=/tmp"}, "pgbackrest_stanza may contain only letters"),
    ],
)
def test_role_refuses_bad_input_before_any_change(host, run_playbook, extra, expected):
    before = config_state(host)
    result = run_playbook(HERE / "bad_input.yml", extra_vars=extra)
    out = result.stdout + result.stderr
    assert result.returncode != 0, f"{extra} was accepted"
    assert expected in out, out[-3000:]
    assert re.search(r"apes-pgbackrest-repo\s*:.*changed=0\s", out), "nothing may change"
    assert re.search(r"apes-pgbackrest-db\s*:.*changed=0\s", out), "nothing may change"
    assert config_state(host) == before


def test_in_place_restore_needs_confirmation(host, run_playbook):
    pid_before = host.check_output(
        "head -n 1 $(runuser -u postgres -- psql -Atqc 'SHOW data_directory')/postmaster.pid"
    )
    result = run_playbook(
        PROJECT / "playbooks" / "postgresql_restore.yml", extra_vars={"postgresql_restore_mode": "in_place"}
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "set postgresql_restore_confirm_in_place=true to confirm" in out
    assert re.search(r"changed=0\s", out)
    pid_after = host.check_output("head -n 1 $(runuser -u postgres -- psql -Atqc 'SHOW data_directory')/postmaster.pid")
    assert pid_after == pid_before, "PostgreSQL must not have been stopped"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"postgresql_restore_type": "yesterday"}, "postgresql_restore_type must be latest, time, name, xid or lsn"),
        (
            {"postgresql_restore_type": "time"},
            "postgresql_restore_target is required with postgresql_restore_type=time",
        ),
    ],
)
def test_restore_refuses_bad_requests(run_playbook, extra, expected):
    result = run_playbook(PROJECT / "playbooks" / "postgresql_restore.yml", extra_vars=extra)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
