# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: postgresql_scram_matches
short_description: Whether a password matches a PostgreSQL role's SCRAM-SHA-256 verifier, without the verifier
version_added: 0.2.0
author:
  - apes.infra developers (@apes-infra)
description:
  - Lets a role decide on the controller whether a login role's password must be set again, from a read-only probe
    of the host, instead of running M(community.postgresql.postgresql_user) for every role on every run.
  - The probe reads from C(pg_authid) only the public parameters of the stored verifier
    (C(SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)), the iteration count and the salt, which the
    server sends to every client in the clear, and the SHA-256 of its ServerKey; neither key leaves the host. The
    filter derives the ServerKey from the password as PostgreSQL does (RFC 5802, RFC 7677) and compares the
    digests.
  - Returns V(false) when the role has no SCRAM verifier (no password, an md5 password), when the description is
    incomplete, and for passwords that are not plain ASCII (PostgreSQL normalizes those with SASLprep); the role then
    converges with the module, which is always right.
options:
  _input:
    description: The password.
    type: str
    required: true
  verifier:
    description:
      - The probe's description of the stored verifier, a dictionary with C(iterations) (int), C(salt) (base64) and
        C(server_key_sha256) (hex), or V(null) when the role has no SCRAM password.
    type: dict
    required: true
"""

EXAMPLES = r"""
# The probe's SQL: for each role, its iterations, salt and the SHA-256 of its ServerKey.
#   json_build_object('iterations', split_part(split_part(rolpassword, '$', 2), ':', 1)::int,
#                     'salt', split_part(split_part(rolpassword, '$', 2), ':', 2),
#                     'server_key_sha256', encode(sha256(convert_to(
#                         split_part(split_part(rolpassword, '$', 3), ':', 2), 'UTF8')), 'hex'))
- name: Set the password only where it differs
  community.postgresql.postgresql_user:
    name: app
    password: "{{ app_password }}"
  when: not (app_password | apes.infra.postgresql_scram_matches(probe_roles.app.scram))
  no_log: true
"""

RETURN = r"""
_value:
  description: Whether the password gives the stored verifier's ServerKey.
  type: bool
"""

import base64
import binascii
import hashlib
import hmac

from ansible.errors import AnsibleFilterError


def server_key(password, salt, iterations):
    """The ServerKey of a SCRAM-SHA-256 verifier (RFC 5802: HMAC(SaltedPassword, "Server Key"))."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def postgresql_scram_matches(password, verifier):
    if verifier is None:
        return False
    if not isinstance(verifier, dict):
        kind = type(verifier).__name__
        raise AnsibleFilterError(f"postgresql_scram_matches: the verifier must be a dictionary, got {kind}")
    if password is None:
        return False
    password = str(password)
    if not password.isascii():
        return False
    try:
        iterations = int(verifier["iterations"])
        salt = base64.b64decode(str(verifier["salt"]), validate=True)
        wanted = str(verifier["server_key_sha256"]).lower()
    except (KeyError, TypeError, ValueError, binascii.Error):
        return False
    if iterations < 1 or not salt:
        return False
    key = base64.b64encode(server_key(password, salt, iterations))
    return hmac.compare_digest(hashlib.sha256(key).hexdigest(), wanted)


class FilterModule:
    def filters(self):
        return {"postgresql_scram_matches": postgresql_scram_matches}
