#!/usr/bin/python
# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pki_certificates
short_description: Keep a site's certificate authority and issue or renew every certificate a play needs, in one call
version_added: 0.2.0
description:
  - Runs on the controller (C(delegate_to=localhost), C(run_once=true)) and keeps one internal certificate
    authority per site directory O(dir), and the certificates of O(certificates) signed by it.
  - The CA (C(<dir>/ca.crt), C(<dir>/ca.key)) is created once with an ECC key. When its certificate nears its end
    (fewer than O(ca.renew_days) left) it is renewed with the B(same key and name), so every certificate it signed
    keeps verifying against the new CA certificate.
  - A certificate (C(<dir>/certs/<name>.crt), key C(<dir>/private/<name>.key)) is issued when it is missing, when
    fewer than O(renew_days) days remain, when it was not signed by the current CA key, when its common name or
    subject alternative names differ from the request, or when its key usage or extended key usage differ.
    Otherwise it is left alone, and the call only reads files.
  - Leaf keys are ECC P-256, made once per name and kept; a renewal signs the existing key again.
  - With O(ca_cert_path) and O(ca_key_path) the certificates are signed by your CA instead, which this module
    never changes or renews (it warns when it nears its end).
  - The result is also returned as the fact C(apes_pki) (RV(ansible_facts.apes_pki)). Run once
    (C(run_once=true)), the task sets it on every host of the play, which is how the C(apes.infra.pki) role publishes
    it.
author:
  - apes.infra developers (@apes-infra)
extends_documentation_fragment:
  - apes.infra.attributes
attributes:
  check_mode:
    support: full
    details:
      - Predicts what would be issued and why; writes nothing (RV(certificates.serial) is null for what would be
        issued).
  diff_mode:
    support: full
    details:
      - One entry per certificate to issue, with its names and usages before and after and the reason. No key material
        ever appears in the output.
  idempotent:
    support: full
requirements:
  - cryptography >= 3.1 on the controller (a dependency of ansible-core)
options:
  dir:
    description:
      - The site PKI directory on the controller, created mode C(0700) (C(certs/) and C(private/) too).
      - Keep it out of version control (the roles use C(inventories/<env>/.secrets/pki), which is git-ignored).
    type: path
    required: true
  ca:
    description: The CA this module creates and renews (ignored with O(ca_cert_path)).
    type: dict
    default: {}
    suboptions:
      common_name:
        description:
          - The CA's name (subject and issuer). Changing it renews the CA certificate and re-issues every certificate.
        type: str
        default: apes.infra development CA
      validity_days:
        description: Validity of the CA certificate.
        type: int
        default: 3650
      renew_days:
        description:
          - Renew the CA certificate (same key) when fewer days than this remain. Must be below O(ca.validity_days).
        type: int
        default: 180
      curve:
        description: Curve of the CA key, used when the key is made. An existing key is kept whatever its curve.
        type: str
        choices: [secp256r1, secp384r1]
        default: secp384r1
  certificates:
    description:
      - The certificates wanted. The same name may appear more than once with the same settings (several hosts asking
        for one shared certificate); with different settings the module fails.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - The file name, C(<dir>/certs/<name>.crt) and C(<dir>/private/<name>.key). Letters, digits, C(.), C(_) and
            C(-), starting with a letter or digit.
        type: str
        required: true
      common_name:
        description: The subject's common name. Defaults to O(certificates[].name).
        type: str
      subject_alt_names:
        description:
          - Names the certificate is valid for, as V(DNS:db1.example.net) or V(IP:10.0.0.11). Compared as a set, so the
            order does not matter; DNS names are compared in lower case and IP addresses in their normal form.
        type: list
        elements: str
        default: []
      key_usage:
        description:
          - V(digitalSignature) (what TLS needs with an ECC key), V(nonRepudiation), V(keyAgreement).
          - V(keyEncipherment) is refused, as it applies only to RSA keys.
        type: list
        elements: str
        default: [digitalSignature]
      extended_key_usage:
        description:
          - V(serverAuth), V(clientAuth), V(codeSigning), V(emailProtection), V(timeStamping), V(OCSPSigning), or
            dotted OIDs.
          - Use V([serverAuth, clientAuth]) for services that also present their certificate as clients (replication,
            mutual TLS).
        type: list
        elements: str
        default: [serverAuth]
      validity_days:
        description:
          - Validity of a newly issued certificate. A change takes effect at the next renewal. Must be above
            O(renew_days).
        type: int
        default: 397
  renew_days:
    description: Renew a certificate when fewer days than this remain.
    type: int
    default: 30
  ca_cert_path:
    description:
      - Sign with this CA certificate (PEM, on the controller) instead of the one in O(dir). The first certificate
        in the file signs; the whole file is what hosts should trust (RV(ca.cert_path)), so it may carry a chain.
    type: path
  ca_key_path:
    description: The key of O(ca_cert_path) (PEM, on the controller).
    type: path
  ca_key_passphrase:
    description:
      - Passphrase of the CA key (O(ca_key_path), or C(<dir>/ca.key), which is then also made encrypted with it).
    type: str
notes:
  - In production, keep the CA key encrypted (O(ca_key_passphrase) from a vault) or use your own CA
    (O(ca_cert_path), O(ca_key_path)) with its key kept in a vault, and never on the managed hosts. Only
    certificates and leaf keys go to hosts.
  - Leaf keys are stored unencrypted (mode C(0600)), as the services that use them read them without a passphrase.
  - The directory is locked while the module works, so two plays on one controller take turns.
seealso:
  - module: community.crypto.x509_certificate
  - name: RFC 5280
    description: Internet X.509 Public Key Infrastructure Certificate and CRL Profile.
    link: https://www.rfc-editor.org/rfc/rfc5280
"""

EXAMPLES = r"""
- name: Issue or renew every certificate of the play in one call
  apes.infra.pki_certificates:
    dir: "{{ inventory_dir }}/.secrets/pki"
    certificates:
      - name: db1-postgresql
        common_name: db1.example.net
        subject_alt_names: [DNS:db1.example.net, DNS:db1, IP:10.0.0.11]
        extended_key_usage: [serverAuth, clientAuth]
      - name: cache1-redis
        subject_alt_names: [DNS:cache1.example.net, IP:10.0.0.21]
  delegate_to: localhost
  run_once: true
  become: false
  register: pki

- name: Sign with the organisation's CA, its key passphrase from the vault
  apes.infra.pki_certificates:
    dir: "{{ inventory_dir }}/.secrets/pki"
    ca_cert_path: "{{ inventory_dir }}/files/internal-ca.crt"
    ca_key_path: /secure/internal-ca.key
    ca_key_passphrase: "{{ vault_internal_ca_passphrase }}"
    certificates: "{{ wanted }}"
  delegate_to: localhost
  run_once: true
  become: false
"""

RETURN = r"""
ca:
  description: The CA that signs.
  returned: always
  type: dict
  contains:
    cert_path:
      description: The CA certificate to install on hosts as their trust anchor.
      type: str
    key_path:
      description: The CA key (on the controller).
      type: str
    not_after:
      description: End of the CA certificate's validity, ISO 8601 UTC.
      type: str
      sample: "2036-11-29T22:08:47Z"
    serial:
      description: Serial number of the CA certificate in hexadecimal (null in check mode when it would be renewed).
      type: str
    changed:
      description: Whether the CA certificate was (or would be) made or renewed.
      type: bool
    reason:
      description: Why, V(missing), V(expiring), V(names-changed) or V(key-changed); null when unchanged.
      type: str
    external:
      description: Whether the CA is the one of O(ca_cert_path).
      type: bool
certificates:
  description: Per name in O(certificates).
  returned: always
  type: dict
  contains:
    cert_path:
      description: The certificate (controller path).
      type: str
    key_path:
      description: Its key (controller path, mode C(0600)).
      type: str
    ca_path:
      description: The CA certificate that verifies it.
      type: str
    not_after:
      description: End of validity, ISO 8601 UTC (predicted in check mode when it would be issued).
      type: str
    serial:
      description: Serial number in hexadecimal (null in check mode when it would be issued).
      type: str
    changed:
      description: Whether it was (or would be) issued by this call.
      type: bool
    reason:
      description:
        - Why it was issued, V(missing) (no certificate or no key), V(expiring), V(ca-changed) (not signed by the
          current CA key), V(names-changed), V(usage-changed) or V(key-changed) (the certificate does not match the
          key); null when unchanged.
      type: str
  sample:
    db1-postgresql:
      cert_path: /srv/ansible/inventories/prod/.secrets/pki/certs/db1-postgresql.crt
      key_path: /srv/ansible/inventories/prod/.secrets/pki/private/db1-postgresql.key
      ca_path: /srv/ansible/inventories/prod/.secrets/pki/ca.crt
      not_after: "2028-01-02T10:00:00Z"
      serial: 5F1C0A0E3B2D4C1A9E8F7D6C5B4A39281706F5E4
      changed: false
      reason: null
ansible_facts:
  description: Facts set on the host (on every host of the play when the task runs once).
  returned: always
  type: dict
  contains:
    apes_pki:
      description: The CA and the certificates of this call, for the roles that install them.
      type: dict
      contains:
        ca_path:
          description: RV(ca.cert_path).
          type: str
        certificates:
          description: RV(certificates).
          type: dict
fixed_paths:
  description: Files and directories in O(dir) whose mode was (or would be) corrected.
  returned: always
  type: list
  elements: str
"""

import datetime

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.apes.infra.plugins.module_utils._pki import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    DEFAULT_CA_COMMON_NAME,
    DEFAULT_CA_CURVE,
    DEFAULT_CA_RENEW_DAYS,
    DEFAULT_CA_VALIDITY_DAYS,
    DEFAULT_RENEW_DAYS,
    DEFAULT_VALIDITY_DAYS,
    HAS_CRYPTOGRAPHY,
    PkiError,
    Site,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "ca": {
                "type": "dict",
                "default": {},
                "options": {
                    "common_name": {"type": "str", "default": DEFAULT_CA_COMMON_NAME},
                    "validity_days": {"type": "int", "default": DEFAULT_CA_VALIDITY_DAYS},
                    "renew_days": {"type": "int", "default": DEFAULT_CA_RENEW_DAYS},
                    "curve": {"type": "str", "choices": ["secp256r1", "secp384r1"], "default": DEFAULT_CA_CURVE},
                },
            },
            "certificates": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "common_name": {"type": "str"},
                    "subject_alt_names": {"type": "list", "elements": "str", "default": []},
                    "key_usage": {"type": "list", "elements": "str", "default": ["digitalSignature"], "no_log": False},
                    "extended_key_usage": {
                        "type": "list",
                        "elements": "str",
                        "default": ["serverAuth"],
                        "no_log": False,
                    },
                    "validity_days": {"type": "int", "default": DEFAULT_VALIDITY_DAYS},
                },
            },
            "renew_days": {"type": "int", "default": DEFAULT_RENEW_DAYS},
            "ca_cert_path": {"type": "path"},
            "ca_key_path": {"type": "path", "no_log": False},
            "ca_key_passphrase": {"type": "str", "no_log": True},
        },
        required_together=[["ca_cert_path", "ca_key_path"]],
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    params = module.params
    ca = params["ca"]
    try:
        site = Site(
            params["dir"],
            ca_common_name=ca["common_name"],
            ca_validity_days=ca["validity_days"],
            ca_renew_days=ca["renew_days"],
            ca_curve=ca["curve"],
            ca_cert_path=params["ca_cert_path"],
            ca_key_path=params["ca_key_path"],
            ca_key_passphrase=params["ca_key_passphrase"],
            renew_days=params["renew_days"],
        )
        result = site.converge(params["certificates"], datetime.datetime.now(datetime.UTC), module.check_mode)
    except PkiError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"{exc.filename or params['dir']}: {exc.strerror}")
    for warning in site.warnings:
        module.warn(warning)
    result["ansible_facts"] = {
        "apes_pki": {"ca_path": result["ca"]["cert_path"], "certificates": result["certificates"]}
    }
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
