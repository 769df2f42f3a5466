#!/usr/bin/python
# Copyright: apes.infra developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pgbackrest_info
short_description: Report pgBackRest stanzas, their newest backups and WAL archive, and check backup freshness
version_added: 0.1.0
description:
  - Runs C(pgbackrest info --output=json) and summarizes each stanza, its status, the newest
    V(full), V(diff) and V(incr) backups (label, start and stop time, size, repository size), the
    newest backup of any type, and the range of archived WAL.
  - With O(max_age), fails when a stanza has no backup or its newest backup finished longer ago than
    that, so that a play or a monitoring job can assert that backups are fresh.
  - Read-only; runs in check mode too.
author:
  - apes.infra developers (@apes-infra)
extends_documentation_fragment:
  - apes.infra.attributes
  - apes.infra.attributes.INFO_MODULE
options:
  stanza:
    description: Only this stanza. Default is every stanza in the repository.
    type: str
  max_age:
    description:
      - Fail when the newest backup of a stanza finished longer ago than this.
      - A number of seconds, or a number with a unit V(s), V(m), V(h), V(d) or V(w) (for example V(26h)).
    type: raw
  config:
    description: pgBackRest configuration file, when not the default.
    type: path
  repo:
    description: Repository number to read (C(--repo)); default is every configured repository.
    type: int
  executable:
    description: Path of the pgbackrest binary.
    type: path
    default: pgbackrest
notes:
  - Run it as a user that can read the repository and its configuration (the repository host's
    C(pgbackrest) user, or C(postgres) on a database host), for example with O(ignore:become_user).
  - Backups that failed do not appear in C(pgbackrest info); O(max_age) is what catches them.
seealso:
  - name: pgBackRest command reference, info
    description: The JSON this module reads.
    link: https://pgbackrest.org/command.html#command-info
"""

EXAMPLES = r"""
- name: Fail unless every stanza has a backup younger than 26 hours
  apes.infra.pgbackrest_info:
    max_age: 26h
  become: true
  become_user: pgbackrest

- name: Read the newest full backup of stanza main
  apes.infra.pgbackrest_info:
    stanza: main
  register: backups

- name: Show it
  ansible.builtin.debug:
    msg: "{{ backups.stanzas.main.newest.full.label }} ({{ backups.stanzas.main.newest.full.repository_size }} bytes)"
"""

RETURN = r"""
stanzas:
  description: Per stanza name, its summary.
  returned: always
  type: dict
  contains:
    status_code:
      description: pgBackRest's status code (0 ok, 1 missing stanza path, 2 no valid backups, ...).
      type: int
    status_message:
      description: pgBackRest's status message.
      type: str
    ok:
      description: Whether the status code is 0.
      type: bool
    backup_in_progress:
      description: Whether a backup holds the stanza's lock now.
      type: bool
    backup_count:
      description: Number of backups in the repository.
      type: int
    backups_with_errors:
      description: Labels of backups that pgBackRest flags with errors (for example page checksum errors).
      type: list
      elements: str
    newest:
      description: The newest backup of each type, V(full), V(diff), V(incr) (null when there is none).
      type: dict
    latest:
      description: The newest backup of any type, with label, type, prior, start, stop (ISO 8601 UTC),
        start_epoch, stop_epoch, size, delta, repository_size, repository_delta, wal_start, wal_stop, error.
      type: dict
    age_seconds:
      description: Seconds since the newest backup finished.
      type: int
    archive:
      description: The current database's WAL archive, V(id), V(min) and V(max) segment names.
      type: dict
  sample:
    main:
      status_code: 0
      status_message: ok
      ok: true
      backup_count: 3
      latest:
        label: 20261129-122535F_20261129-122537I
        type: incr
        stop: "2026-11-29T12:25:37Z"
        repository_size: 5363120
      age_seconds: 120
      archive:
        id: 17-1
        min: "000000010000000000000001"
        max: "000000010000000000000007"
problems:
  description: Why O(max_age) failed, one message per stanza (empty when fresh or when O(max_age) is not set).
  returned: always
  type: list
  elements: str
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.apes.infra.plugins.module_utils._pgbackrest import (
    InfoError,
    freshness_problems,
    parse_duration,
    summarize,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "stanza": {"type": "str"},
            "max_age": {"type": "raw"},
            "config": {"type": "path"},
            "repo": {"type": "int"},
            "executable": {"type": "path", "default": "pgbackrest"},
        },
        supports_check_mode=True,
    )
    max_age = None
    if module.params["max_age"] is not None:
        try:
            max_age = parse_duration(module.params["max_age"])
        except InfoError as exc:
            module.fail_json(msg=str(exc))

    executable = module.get_bin_path(module.params["executable"], required=True)
    cmd = [executable, "--output=json"]
    if module.params["config"]:
        cmd.append("--config=" + module.params["config"])
    if module.params["stanza"]:
        cmd.append("--stanza=" + module.params["stanza"])
    if module.params["repo"] is not None:
        cmd.append(f"--repo={module.params['repo']}")
    cmd.append("info")

    rc, out, err = module.run_command(cmd)
    if rc != 0:
        module.fail_json(msg=f"pgbackrest info failed (rc {rc}): {err.strip() or out.strip()}", cmd=cmd)
    try:
        stanzas = summarize(json.loads(out), int(time.time()))
    except (ValueError, InfoError) as exc:
        module.fail_json(msg=f"cannot read pgbackrest info output: {exc}", stdout=out)

    problems = freshness_problems(stanzas, max_age) if max_age is not None else []
    if module.params["stanza"] and module.params["stanza"] in stanzas:
        missing = stanzas[module.params["stanza"]]
        if missing["status_code"] == 1:
            problems.append(f"stanza {module.params['stanza']}: {missing['status_message']}")
    if problems:
        module.fail_json(msg="; ".join(problems), stanzas=stanzas, problems=problems)
    module.exit_json(changed=False, stanzas=stanzas, problems=problems)


if __name__ == "__main__":
    main()
