# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: files_to_change
short_description: The paths of a managed_files request that differ from what a host_probe saw
version_added: 0.2.0
author:
  - apes.infra developers (@apes-infra)
description:
  - Compares entries as M(apes.infra.managed_files) takes them (C(path), C(content), C(owner), C(group),
    C(mode)) with the files that M(apes.infra.host_probe) read (with checksums), on the controller, and returns the
    paths that would change, so that a role runs M(apes.infra.managed_files) only when something differs.
  - An entry without C(content) is a directory. A path the probe did not read counts as different, so the result
    errs towards running the module, which then decides. Owner, group and mode are compared only where the entry
    gives them, as the module does.
  - Content is compared by SHA-1 of its UTF-8 encoding, as the probe reports it. Give the probe no secret of low
    entropy (a password file), as its SHA-1 would be in the probe's result. Leave such a file out of the probe; it then
    always counts as different.
options:
  _input:
    description: The entries (files, secret files or directories), or a list of such lists.
    type: list
    elements: dict
    required: true
  probe:
    description: The O(probe) result's C(files) dictionary.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Write the configuration only when it differs from what the probe saw
  apes.infra.managed_files:
    files: "{{ wanted_files }}"
  when: wanted_files | apes.infra.files_to_change(probe.files) | length > 0
"""

RETURN = r"""
_value:
  description: The paths that differ, in input order.
  type: list
  elements: str
"""

import hashlib

from ansible.errors import AnsibleFilterError


def _mode(value):
    if value is None:
        return None
    text = str(value)
    if not text.isdigit():
        return text
    return format(int(text, 8), "04o")


def _differs(entry, seen):
    if not seen or not seen.get("exists"):
        return True
    is_file = "content" in entry
    if is_file:
        if seen.get("isdir") or seen.get("sha1") is None:
            return True
        content = entry["content"]
        data = content.encode("utf-8") if isinstance(content, str) else str(content).encode("utf-8")
        if hashlib.sha1(data, usedforsecurity=False).hexdigest() != seen["sha1"]:
            return True
    elif not seen.get("isdir"):
        return True
    for key in ("owner", "group"):
        wanted = entry.get(key)
        if wanted is not None and str(wanted) not in (seen.get(key), str(seen.get("uid" if key == "owner" else "gid"))):
            return True
    wanted_mode = _mode(entry.get("mode"))
    return wanted_mode is not None and wanted_mode != seen.get("mode")


def files_to_change(entries, probe):
    if not isinstance(probe, dict):
        raise AnsibleFilterError(f"files_to_change: the probe's files must be a dictionary, got {type(probe).__name__}")
    flat = []
    for item in entries or []:
        if isinstance(item, list):
            flat.extend(item)
        else:
            flat.append(item)
    changed = []
    for entry in flat:
        if not isinstance(entry, dict) or "path" not in entry:
            raise AnsibleFilterError(f"files_to_change: each entry needs a path, got {entry!r}")
        if _differs(entry, probe.get(entry["path"])):
            changed.append(entry["path"])
    return changed


class FilterModule:
    def filters(self):
        return {"files_to_change": files_to_change}
