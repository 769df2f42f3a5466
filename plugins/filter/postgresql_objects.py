# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: postgresql_objects_to_change
short_description: Which PostgreSQL roles, databases, schemas, extensions and grants differ from a read-only probe
version_added: 0.2.0
author:
  - apes.infra developers (@apes-infra)
description:
  - Used by the C(apes.infra.postgresql) role. Its one M(apes.infra.host_probe) call reads the cluster's roles,
    memberships, databases, schemas, extensions and access control lists as JSON (see the role's C(vars/main.yml)),
    and this filter compares them with what the role is asked for, on the controller. The role then runs the
    M(community.postgresql.postgresql_user), M(community.postgresql.postgresql_db) (and so on) modules only for
    what differs, instead of once per object on every run.
  - Whatever the probe could not read (the cluster was down or did not exist, a database is new) counts as
    different, so that the modules converge it. The modules stay the authority; this filter only leaves out work
    that is already done.
  - Passwords are compared with P(apes.infra.postgresql_scram_matches#filter).
  - Grants of types V(database), V(schema), V(table) and V(sequence) with explicit privileges are compared with
    the access control lists (owners' implicit privileges included); other grants (V(ALL), default privileges,
    functions, ...) always count as different.
options:
  _input:
    description:
      - The login roles wanted, as in the role's C(postgresql_users) (C(name), C(password), C(attributes),
        C(member_of), C(connection_limit)).
    type: list
    elements: dict
    required: true
  databases:
    description: The databases wanted, as in C(postgresql_databases).
    type: list
    elements: dict
    required: true
  privileges:
    description: The grants wanted, as in C(postgresql_privileges).
    type: list
    elements: dict
    required: true
  cluster:
    description: The probe's cluster-wide state (C(roles), C(databases)), or V(null) when it could not be read.
    type: dict
    required: true
  per_database:
    description:
      - Per database name, the probe's state of that database (C(schemas), C(extensions), C(relations)), or V(null).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Work out what differs
  ansible.builtin.set_fact:
    todo: "{{ users | apes.infra.postgresql_objects_to_change(databases, privileges, cluster_state, database_states) }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: What to converge.
  type: dict
  contains:
    users:
      description: Names of the roles to create or alter (missing, attributes, connection limit or password differ).
      type: list
      elements: str
    memberships:
      description: Names of the roles that lack a role of their C(member_of).
      type: list
      elements: str
    databases:
      description: Names of the databases to create or give another owner.
      type: list
      elements: str
    schemas:
      description: Schemas to create or give another owner, as C({database, name, owner}) (the owner resolved).
      type: list
      elements: dict
    extensions:
      description: Extensions to create, as C({database, name}).
      type: list
      elements: dict
    privileges:
      description: The entries of O(privileges) to apply, as given.
      type: list
      elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.filter.postgresql_scram import postgresql_scram_matches

# Role attribute keywords (CREATE ROLE) and the probe's field for each.
FLAGS = {
    "SUPERUSER": "superuser",
    "CREATEDB": "createdb",
    "CREATEROLE": "createrole",
    "LOGIN": "login",
    "REPLICATION": "replication",
    "INHERIT": "inherit",
    "BYPASSRLS": "bypassrls",
}
# Privileges that an access control list names one by one, per grant type.
KNOWN_PRIVILEGES = {
    "database": {"CREATE", "CONNECT", "TEMPORARY", "TEMP"},
    "schema": {"CREATE", "USAGE"},
    "table": {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"},
    "sequence": {"SELECT", "UPDATE", "USAGE"},
}


def _words(value):
    return [w.strip() for w in str(value or "").split(",") if w.strip()]


def _user_differs(user, roles):
    name = user["name"]
    current = roles.get(name)
    if current is None:
        return True
    for flag in ["LOGIN", *_words(user.get("attributes"))]:
        word = flag.upper()
        negated = word.startswith("NO") and word[2:] in FLAGS
        field = FLAGS.get(word[2:] if negated else word)
        if field is None or current.get(field) is not (not negated):
            return True
    limit = user.get("connection_limit")
    if current.get("connection_limit") != (-1 if limit is None else int(limit)):
        return True
    return not postgresql_scram_matches(user.get("password"), current.get("scram"))


def _acl_has(acl, grantees, privileges):
    held = {(str(g), str(p).upper()) for g, p in acl or []}
    return all((g, "TEMPORARY" if p == "TEMP" else p) in held for g in grantees for p in privileges)


def _privilege_done(entry, cluster, database):
    kind = entry.get("type") or "table"
    privileges = [p.upper() for p in _words(entry.get("privs"))]
    grantees = ["PUBLIC" if r.upper() == "PUBLIC" else r for r in _words(entry.get("roles"))]
    if kind not in KNOWN_PRIVILEGES or not privileges or not grantees:
        return False
    if not set(privileges) <= KNOWN_PRIVILEGES[kind]:
        return False
    objects = _words(entry.get("objs"))
    if kind == "database":
        names = objects or [entry["database"]]
        found = [((cluster or {}).get("databases") or {}).get(n) for n in names]
        return all(f is not None and _acl_has(f.get("acl"), grantees, privileges) for f in found)
    if database is None:
        return False
    if kind == "schema":
        found = [(database.get("schemas") or {}).get(n) for n in objects]
        return bool(objects) and all(f is not None and _acl_has(f.get("acl"), grantees, privileges) for f in found)
    relations = database.get("relations") or {}
    schema = entry.get("schema") or "public"
    if schema not in (database.get("schemas") or {}):
        return False
    wanted_kinds = {"S"} if kind == "sequence" else {"r", "p", "v", "m", "f"}
    if objects == ["ALL_IN_SCHEMA"]:
        found = [r for key, r in relations.items() if key.split(".", 1)[0] == schema and r.get("kind") in wanted_kinds]
        # An empty schema: nothing to check, and nothing that a grant would change.
        return all(_acl_has(r.get("acl"), grantees, privileges) for r in found)
    if not objects:
        return False
    found = [relations.get(o if "." in o else f"{schema}.{o}") for o in objects]
    return all(f is not None and _acl_has(f.get("acl"), grantees, privileges) for f in found)


def postgresql_objects_to_change(users, databases, privileges, cluster, per_database):
    if cluster is not None and not isinstance(cluster, dict):
        raise AnsibleFilterError("postgresql_objects_to_change: cluster must be a dictionary or null")
    if not isinstance(per_database, dict):
        raise AnsibleFilterError("postgresql_objects_to_change: per_database must be a dictionary")
    roles = (cluster or {}).get("roles")
    known_databases = (cluster or {}).get("databases")
    todo = {"users": [], "memberships": [], "databases": [], "schemas": [], "extensions": [], "privileges": []}
    for user in users or []:
        if roles is None or _user_differs(user, roles):
            todo["users"].append(user["name"])
        wanted = [str(g) for g in user.get("member_of") or []]
        held = ((roles or {}).get(user["name"]) or {}).get("member_of") or []
        if wanted and (roles is None or not set(wanted) <= set(held)):
            todo["memberships"].append(user["name"])
    for db in databases or []:
        name = db["name"]
        found = (known_databases or {}).get(name)
        if found is None or found.get("owner") != (db.get("owner") or "postgres"):
            todo["databases"].append(name)
        state = per_database.get(name)
        schemas = (state or {}).get("schemas") or {}
        for schema in db.get("schemas") or []:
            owner = schema.get("owner") or db.get("owner") or "postgres"
            if state is None or (schemas.get(schema["name"]) or {}).get("owner") != owner:
                todo["schemas"].append({"database": name, "name": schema["name"], "owner": owner})
        extensions = (state or {}).get("extensions") or []
        for extension in db.get("extensions") or []:
            if state is None or extension not in extensions:
                todo["extensions"].append({"database": name, "name": extension})
    for entry in privileges or []:
        if not _privilege_done(entry, cluster, per_database.get(entry.get("database"))):
            todo["privileges"].append(entry)
    return todo


class FilterModule:
    def filters(self):
        return {"postgresql_objects_to_change": postgresql_objects_to_change}
