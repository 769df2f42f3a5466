# Copyright: apes.infra developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark helper: count the module runs on the hosts, per role, and write them as JSON.

Enabled by the benchmark scripts only (ANSIBLE_CALLBACK_PLUGINS=benchmarks/callbacks,
ANSIBLE_CALLBACKS_ENABLED=apes_counts, APES_COUNTS_FILE=<path>). A "module run" is a task result
on a host for an action that executes on the host; actions that Ansible runs on the controller
only (set_fact, assert, debug, include_*, meta, argument validation, ...) and skipped tasks are not
counted, and results delegated to localhost are counted apart.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: apes_counts
type: aggregate
short_description: Count module runs per role and host (benchmarks only)
description:
  - Writes a JSON summary of module runs per role to the file named by C(APES_COUNTS_FILE).
requirements:
  - enabled in callbacks_enabled
"""

import json
import os
from collections import Counter

from ansible.plugins.callback import CallbackBase

CONTROLLER_ONLY = {
    "set_fact",
    "assert",
    "debug",
    "fail",
    "include_tasks",
    "import_tasks",
    "include_role",
    "import_role",
    "include_vars",
    "meta",
    "validate_argument_spec",
    "add_host",
    "group_by",
    "set_stats",
    "pause",
}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "apes_counts"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.remote = Counter()
        self.delegated = Counter()
        self.by_action = Counter()

    def _record(self, result):
        task = result._task
        action = task.action.rsplit(".", 1)[-1]
        if action in CONTROLLER_ONLY:
            return
        role = task._role.get_name() if task._role else "(play)"
        role = role.rsplit(".", 1)[-1]
        items = result._result.get("results")
        # A loop runs the module once per item that was not skipped.
        runs = len([r for r in items if not r.get("skipped")]) if isinstance(items, list) else 1
        delegate = result._result.get("_ansible_delegated_vars", {}).get("ansible_host")
        if task.delegate_to and delegate in ("localhost", "127.0.0.1", None):
            self.delegated[role] += runs
        else:
            self.remote[role] += runs
            self.by_action[action] += runs

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("APES_COUNTS_FILE")
        if not path:
            return
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "remote": dict(self.remote),
                    "delegated": dict(self.delegated),
                    "by_action": dict(self.by_action.most_common()),
                },
                fh,
                indent=1,
            )
