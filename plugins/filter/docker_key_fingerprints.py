# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: docker_key_fingerprints
short_description: Fingerprints of the primary keys in an ASCII-armored OpenPGP public key
version_added: 0.1.0
author:
  - apes.infra developers (@apes-infra)
description:
  - Decodes an ASCII-armored OpenPGP public key block (as served by apt repositories, for example
    U(https://download.docker.com/linux/debian/gpg)) and returns the fingerprint of each primary
    key in it, upper-case hex without spaces. Subkeys are not listed (their fingerprints differ from
    the primary key's, and a repository key pins the primary key).
  - Checks the armor's CRC-24 line when present. Supports key versions 4 (SHA-1 fingerprints,
    40 hex digits), 5 and 6 (SHA-256, 64 hex digits). Fails on anything else, so a damaged or
    unexpected file is never trusted.
  - With O(expected), returns only V(true) or fails. The block must hold at least one key, and every
    primary key in it must have that fingerprint (a second key appended to the file is refused).
  - Runs on the controller with the Python standard library; gpg is not needed. It reads key packets
    only and does not check signatures (apt does that with the key).
options:
  _input:
    description: The ASCII-armored key block (C(-----BEGIN PGP PUBLIC KEY BLOCK-----)).
    type: str
    required: true
  expected:
    description:
      - A full fingerprint (40 or 64 hex digits; spaces, lower case and a V(0x) prefix are accepted).
    type: str
"""

EXAMPLES = r"""
- name: Show the fingerprints of a key file on the controller
  ansible.builtin.debug:
    msg: "{{ lookup('ansible.builtin.file', 'docker.asc') | apes.infra.docker_key_fingerprints }}"

- name: Refuse a key that is not Docker's release key
  ansible.builtin.assert:
    that: key_text | apes.infra.docker_key_fingerprints(expected='9DC8 5822 9FC7 DD38 854A  E2D8 8D81 803C 0EBF CD88')
"""

RETURN = r"""
_value:
  description:
    - Without O(expected), the fingerprints of the primary keys, in file order.
    - With O(expected), V(true) (the filter fails otherwise, naming the fingerprints found).
  type: raw
  sample: ["9DC858229FC7DD38854AE2D88D81803C0EBFCD88"]
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.module_utils._docker_openpgp import (
    OpenPGPError,
    normalize_fingerprint,
    primary_fingerprints,
)


def docker_key_fingerprints(text, expected=None):
    try:
        found = primary_fingerprints(text)
        if expected is None:
            return found
        wanted = normalize_fingerprint(expected)
    except OpenPGPError as exc:
        raise AnsibleFilterError(f"docker_key_fingerprints: {exc}") from exc
    if any(fingerprint != wanted for fingerprint in found):
        raise AnsibleFilterError(
            f"docker_key_fingerprints: the key block holds {', '.join(found)}, expected only {wanted}; "
            "the key is not trusted"
        )
    return True


class FilterModule:
    def filters(self):
        return {"docker_key_fingerprints": docker_key_fingerprints}
