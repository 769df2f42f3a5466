# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: config_set
short_description: Set keys in the text of a KEY VALUE or KEY=VALUE configuration file
version_added: 0.2.0
author:
  - apes.infra developers (@apes-infra)
description:
  - Returns the text of a configuration file with each key of O(settings) set to its value, and every
    other line as it was. Made for distribution files that have no drop-in directory, such as
    C(/etc/login.defs) or C(/etc/aide/aide.conf). Read the file (M(apes.infra.host_probe) with a
    C(cat) command), set the keys on the controller, write the result with M(apes.infra.managed_files).
  - The first active line of a key is replaced by C(<key><separator><value>); later active lines of the
    same key are commented out, so that the file has one value, whichever a program reads (first or last).
  - A key without an active line is inserted after its last commented-out example (C(#KEY ...)), so it
    stays beside its documentation, or else appended at the end.
  - Applying the same settings to the result changes nothing.
options:
  _input:
    description: The file's text.
    type: str
    required: true
  settings:
    description:
      - Keys to set, in order, with their values (strings or numbers, on one line).
    type: dict
    required: true
  separator:
    description: What goes between key and value in a written line (V(" ") for login.defs, V(" = "), V("=")).
    type: str
    default: " "
  comment:
    description: The comment character of the format.
    type: str
    default: "#"
"""

EXAMPLES = r"""
- name: login.defs with a stricter umask
  apes.infra.managed_files:
    files:
      - path: /etc/login.defs
        content: "{{ probe.commands.login_defs.stdout | apes.infra.config_set({'UMASK': '027'}) }}"
"""

RETURN = r"""
_value:
  description: The new text, ending with a newline.
  type: str
"""

import re

from ansible.errors import AnsibleFilterError


def _line_pattern(key: str, comment: str, commented: bool) -> re.Pattern:
    prefix = r"\s*" + re.escape(comment) + r"\s*" if commented else r"\s*"
    return re.compile(r"^" + prefix + re.escape(key) + r"(\s*=|\s|$)")


def config_set(text, settings, separator=" ", comment="#"):
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"config_set: settings must be a mapping, not {type(settings).__name__}")
    lines = str(text).splitlines()
    for raw_key, raw_value in settings.items():
        key = str(raw_key)
        if not key or any(char.isspace() for char in key) or key.startswith(comment):
            raise AnsibleFilterError(f"config_set: {key!r} is not a key")
        if isinstance(raw_value, (dict, list, bool)) or raw_value is None:
            raise AnsibleFilterError(f"config_set: {key}: the value must be a string or a number, not {raw_value!r}")
        value = str(raw_value)
        if "\n" in value or "\r" in value:
            raise AnsibleFilterError(f"config_set: {key}: the value must be on one line")
        wanted = f"{key}{separator}{value}"
        active = _line_pattern(key, comment, commented=False)
        found = [number for number, line in enumerate(lines) if active.match(line)]
        if found:
            lines[found[0]] = wanted
            for number in found[1:]:
                lines[number] = f"{comment} {lines[number].strip()}"
            continue
        example = _line_pattern(key, comment, commented=True)
        examples = [number for number, line in enumerate(lines) if example.match(line)]
        if examples:
            lines.insert(examples[-1] + 1, wanted)
        else:
            lines.append(wanted)
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self):
        return {"config_set": config_set}
