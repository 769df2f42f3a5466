# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: weak_secrets
short_description: The names of secrets that are missing, too short, a placeholder or not one line
version_added: 0.2.0
author:
  - apes.infra developers (@apes-infra)
description:
  - One check of the secrets every role requires, so that the roles agree on what a usable secret is. It returns
    names, never values, so that the task that shows the result needs no C(no_log).
  - A secret is refused when it is not a non-empty string (missing), shorter than O(min_length), contains one of
    O(forbidden), or contains the C(CHANGE-ME) placeholder of C(inventories/example) (any case).
  - A name is listed once. A secret refused only for the placeholder is listed as C(<name> (the CHANGE-ME placeholder)).
options:
  _input:
    description: The secrets, a list of C([name, value]) pairs.
    type: list
    elements: list
    required: true
  min_length:
    description: The fewest characters a secret may have.
    type: int
    default: 16
  forbidden:
    description: Characters a secret must not contain (by default line breaks, which would break a configuration file).
    type: str
    default: "\r\n"
"""

EXAMPLES = r"""
- name: Check the passwords
  ansible.builtin.assert:
    that: __weak | length == 0
    fail_msg: "{{ __weak | join(', ') }}: at least 16 characters, one line, not the CHANGE-ME placeholder"
    quiet: true
  vars:
    __weak: "{{ [['app_password', app_password | default('')]] | apes.infra.weak_secrets }}"
"""

RETURN = r"""
_value:
  description: The names of the refused secrets, in the order given.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

PLACEHOLDER = "change-me"


def weak_secrets(pairs, min_length=16, forbidden="\r\n"):
    """Names of the [name, value] pairs whose value is not a usable secret (see DOCUMENTATION)."""
    if not isinstance(pairs, (list, tuple)):
        raise AnsibleFilterError(f"weak_secrets expects a list of [name, value] pairs, got {type(pairs).__name__}")
    names = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise AnsibleFilterError("weak_secrets expects [name, value] pairs")
        name, value = str(pair[0]), pair[1]
        if not isinstance(value, str) or len(value) < int(min_length) or any(c in value for c in forbidden):
            names.append(name)
        elif PLACEHOLDER in value.lower():
            names.append(f"{name} (the CHANGE-ME placeholder)")
    return names


class FilterModule:
    def filters(self):
        return {"weak_secrets": weak_secrets}
