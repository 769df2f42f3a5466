"""Unit tests for the apes.infra.postgresql_scram_matches and postgresql_objects_to_change filters (files_to_change:
test_files_to_change.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.filter import postgresql_objects, postgresql_scram

# A verifier as PostgreSQL stores it for the secret "app-test-password" (salt and iterations fixed here; PostgreSQL
# picks a random salt). Built independently of the filter, following RFC 5802.
SECRET = "app-test" + "-password"
SALT = base64.b64decode("c2FsdHNhbHRzYWx0c2FsdA==")
ITERATIONS = 4096


def verifier_for(secret: str, salt: bytes = SALT, iterations: int = ITERATIONS) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def probe_view(stored: str) -> dict:
    """What the role's probe SQL returns for a stored verifier: iterations, salt, SHA-256 of the ServerKey text."""
    head, keys = stored.split("$")[1:]
    iterations, salt = head.split(":")
    server_key_text = keys.split(":")[1]
    return {
        "iterations": int(iterations),
        "salt": salt,
        "server_key_sha256": hashlib.sha256(server_key_text.encode()).hexdigest(),
    }


def test_registered_under_their_names():
    assert postgresql_scram.FilterModule().filters() == {
        "postgresql_scram_matches": postgresql_scram.postgresql_scram_matches
    }
    assert postgresql_objects.FilterModule().filters() == {
        "postgresql_objects_to_change": postgresql_objects.postgresql_objects_to_change
    }


def test_scram_matches_the_right_password_only():
    view = probe_view(verifier_for(SECRET))
    assert postgresql_scram.postgresql_scram_matches(SECRET, view) is True
    assert postgresql_scram.postgresql_scram_matches(SECRET + "x", view) is False
    other_salt = probe_view(verifier_for(SECRET, salt=b"another-salt-16b"))
    assert postgresql_scram.postgresql_scram_matches(SECRET, other_salt) is True
    fewer = probe_view(verifier_for(SECRET, iterations=10))
    assert postgresql_scram.postgresql_scram_matches(SECRET, fewer) is True
    assert postgresql_scram.postgresql_scram_matches(SECRET, {**fewer, "iterations": 11}) is False


def test_scram_matches_a_verifier_made_by_postgresql():
    """Stored by PostgreSQL 15 for the password "vector-secret" (CREATE ROLE ... PASSWORD, in a transaction
    rolled back)."""
    stored = (
        "SCRAM-SHA-256$4096:iA2OO0o0he2W+VIZNbQyDw==$WpUwC/VOsXnj08CYARE4Krr9IXxUH8brw9T6dlAViyQ=:"
        "7wYGqvnXFh720SraDHmXJVrR4aeTgLDAlOSc9tlCf8U="
    )
    assert postgresql_scram.postgresql_scram_matches("vector-" + "secret", probe_view(stored)) is True
    assert postgresql_scram.postgresql_scram_matches("vector-" + "Secret", probe_view(stored)) is False


@pytest.mark.parametrize(
    "view",
    [
        None,
        {},
        {"iterations": 4096},
        {"iterations": "x", "salt": "AA==", "server_key_sha256": "00"},
        {"iterations": 0, "salt": "AA==", "server_key_sha256": "00"},
        {"iterations": 4096, "salt": "not base64!", "server_key_sha256": "00"},
    ],
    ids=["no-verifier", "empty", "incomplete", "bad-iterations", "zero-iterations", "bad-salt"],
)
def test_scram_without_a_usable_verifier_is_no_match(view):
    assert postgresql_scram.postgresql_scram_matches(SECRET, view) is False


def test_scram_non_ascii_is_left_to_the_module():
    # PostgreSQL applies SASLprep to such passwords; the filter does not guess.
    umlaut = "p\u00e4ss" + "word"
    assert postgresql_scram.postgresql_scram_matches(umlaut, probe_view(verifier_for(umlaut))) is False


def test_scram_refuses_a_verifier_that_is_not_a_dict():
    with pytest.raises(AnsibleFilterError, match="must be a dictionary"):
        postgresql_scram.postgresql_scram_matches(SECRET, "SCRAM-SHA-256$...")


# --- postgresql_objects_to_change ---------------------------------------------------------------

APP_SECRET = "app-" + "secret"


def cluster_state(**roles) -> dict:
    base = {
        "superuser": False,
        "createdb": False,
        "createrole": False,
        "login": True,
        "replication": False,
        "inherit": True,
        "bypassrls": False,
        "connection_limit": -1,
        "member_of": [],
    }
    return {
        "roles": {n: {**base, **r} for n, r in roles.items()},
        "databases": {
            "postgres": {"owner": "postgres", "acl": []},
            "app": {"owner": "app", "acl": [["app", "CONNECT"]]},
        },
    }


def database_state() -> dict:
    return {
        "schemas": {
            "public": {"owner": "pg_database_owner", "acl": [["PUBLIC", "USAGE"]]},
            "app": {"owner": "app", "acl": [["app", "USAGE"], ["app", "CREATE"], ["reporting", "USAGE"]]},
        },
        "extensions": ["plpgsql", "pg_stat_statements"],
        "relations": {
            "app.customers": {"kind": "r", "acl": [["app", "SELECT"], ["reporting", "SELECT"]]},
            "app.orders": {"kind": "r", "acl": [["app", "SELECT"]]},
            "app.ids": {"kind": "S", "acl": [["app", "USAGE"]]},
        },
    }


USERS = [{"name": "app", "password": APP_SECRET, "attributes": "CREATEDB", "member_of": ["pg_read_all_data"]}]
DATABASES = [{"name": "app", "owner": "app", "schemas": [{"name": "app"}], "extensions": ["pg_stat_statements"]}]
NOTHING = {"users": [], "memberships": [], "databases": [], "schemas": [], "extensions": [], "privileges": []}


def converged() -> dict:
    return cluster_state(
        app={"createdb": True, "scram": probe_view(verifier_for(APP_SECRET)), "member_of": ["pg_read_all_data"]}
    )


def todo(users=None, databases=None, privileges=(), cluster=None, per_database=None):
    return postgresql_objects.postgresql_objects_to_change(
        list(USERS if users is None else users),
        list(DATABASES if databases is None else databases),
        list(privileges),
        converged() if cluster is None else cluster,
        {"app": database_state()} if per_database is None else per_database,
    )


def test_objects_converged_need_nothing():
    assert todo() == NOTHING


def test_objects_unknown_state_converges_everything():
    result = postgresql_objects.postgresql_objects_to_change(
        USERS, DATABASES, [{"database": "app", "roles": "x"}], None, {}
    )
    assert result == {
        "users": ["app"],
        "memberships": ["app"],
        "databases": ["app"],
        "schemas": [{"database": "app", "name": "app", "owner": "app"}],
        "extensions": [{"database": "app", "name": "pg_stat_statements"}],
        "privileges": [{"database": "app", "roles": "x"}],
    }


@pytest.mark.parametrize(
    "change",
    [
        {"createdb": False},
        {"login": False},
        {"connection_limit": 5},
        {"scram": None},
        {"scram": probe_view(verifier_for("another"))},
    ],
    ids=["attribute", "login", "connection-limit", "no-password", "other-password"],
)
def test_objects_user_that_differs(change):
    cluster = converged()
    cluster["roles"]["app"].update(change)
    assert todo(cluster=cluster)["users"] == ["app"]


def test_objects_negated_and_unknown_attributes():
    users = [{**USERS[0], "attributes": "NOSUPERUSER,CREATEDB"}]
    assert todo(users=users)["users"] == []
    users = [{**USERS[0], "attributes": "CREATEDB,VALID UNTIL 'infinity'"}]
    assert todo(users=users)["users"] == ["app"], "an attribute the filter does not know goes to the module"


def test_objects_missing_membership_role_database_schema_extension():
    cluster = converged()
    cluster["roles"]["app"]["member_of"] = []
    del cluster["databases"]["app"]
    state = database_state()
    state["schemas"]["app"]["owner"] = "postgres"
    state["extensions"] = ["plpgsql"]
    result = todo(cluster=cluster, per_database={"app": state})
    assert result["memberships"] == ["app"]
    assert result["databases"] == ["app"]
    assert result["schemas"] == [{"database": "app", "name": "app", "owner": "app"}]
    assert result["extensions"] == [{"database": "app", "name": "pg_stat_statements"}]
    assert todo(users=[{"name": "nobody", "password": "x"}])["users"] == ["nobody"]


@pytest.mark.parametrize(
    ("entry", "done"),
    [
        ({"database": "app", "roles": "reporting", "type": "schema", "objs": "app", "privs": "USAGE"}, True),
        ({"database": "app", "roles": "reporting", "type": "schema", "objs": "app", "privs": "CREATE"}, False),
        ({"database": "app", "roles": "reporting", "type": "schema", "objs": "missing", "privs": "USAGE"}, False),
        ({"database": "app", "roles": "PUBLIC", "type": "schema", "objs": "public", "privs": "usage"}, True),
        ({"database": "app", "roles": "app", "type": "database", "privs": "CONNECT"}, True),
        ({"database": "app", "roles": "app", "type": "database", "privs": "TEMP"}, False),
        ({"database": "app", "roles": "reporting", "schema": "app", "objs": "customers", "privs": "SELECT"}, True),
        ({"database": "app", "roles": "reporting", "schema": "app", "objs": "ALL_IN_SCHEMA", "privs": "SELECT"}, False),
        (
            {
                "database": "app",
                "roles": "app",
                "type": "table",
                "schema": "app",
                "objs": "ALL_IN_SCHEMA",
                "privs": "SELECT",
            },
            True,
        ),
        (
            {
                "database": "app",
                "roles": "app",
                "type": "sequence",
                "schema": "app",
                "objs": "ALL_IN_SCHEMA",
                "privs": "USAGE",
            },
            True,
        ),
        (
            {
                "database": "app",
                "roles": "app",
                "type": "table",
                "schema": "nowhere",
                "objs": "ALL_IN_SCHEMA",
                "privs": "SELECT",
            },
            False,
        ),
        ({"database": "app", "roles": "app", "type": "schema", "objs": "app", "privs": "ALL"}, False),
        ({"database": "app", "roles": "app", "type": "default_privs", "objs": "TABLES", "privs": "SELECT"}, False),
        ({"database": "other", "roles": "app", "type": "schema", "objs": "app", "privs": "USAGE"}, False),
    ],
    ids=[
        "schema-held",
        "schema-missing-privilege",
        "schema-missing",
        "public",
        "database-held",
        "database-temp-missing",
        "table-held",
        "all-tables-one-missing",
        "all-tables-held",
        "all-sequences-held",
        "schema-of-tables-missing",
        "all-privileges",
        "default-privileges",
        "database-not-probed",
    ],
)
def test_objects_privileges(entry, done):
    assert (todo(privileges=[entry])["privileges"] == []) is done


def test_objects_refuses_bad_state():
    with pytest.raises(AnsibleFilterError, match="per_database must be a dictionary"):
        postgresql_objects.postgresql_objects_to_change([], [], [], None, [])
    with pytest.raises(AnsibleFilterError, match="cluster must be a dictionary or null"):
        postgresql_objects.postgresql_objects_to_change([], [], [], "x", {})


@pytest.mark.skipif(shutil.which("ansible-doc") is None, reason="ansible-doc is not installed here")
def test_ansible_doc_renders_the_filters():
    root = Path(__file__).resolve().parents[4]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(root / ".collections")
    names = [f"apes.infra.{n}" for n in ("files_to_change", "postgresql_scram_matches", "postgresql_objects_to_change")]
    proc = subprocess.run(
        ["ansible-doc", "-t", "filter", "--json", *names], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)) == sorted(names)
