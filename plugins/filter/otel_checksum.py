# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: otel_checksum
short_description: The digest a checksum file gives for one artifact
version_added: 0.1.0
author:
  - apes.infra developers (@apes-infra)
description:
  - Reads the text of a checksum file and returns the lower-case hex digest it gives for O(filename).
  - Accepts the per-artifact files that OpenTelemetry Collector releases publish next to each
    archive (only the digest, or one C(<digest>  <name>) line), combined C(sha256sum) files
    (C(<digest>  <name>) or C(<digest> *<name>) lines) and BSD-style lines (as C(sha256sum --tag) writes them).
    Names are compared by their last path component.
  - Fails when the file gives no digest for O(filename), two different ones, or a digest of the
    wrong length, so that a damaged or unexpected file is never trusted.
options:
  _input:
    description: The text of the checksum file.
    type: str
    required: true
  filename:
    description: The artifact's file name, for example V(otelcol-contrib_0.165.0_linux_amd64.tar.gz).
    type: str
    required: true
  algorithm:
    description: Digest algorithm of the file.
    type: str
    choices: [sha256, sha512]
    default: sha256
"""

EXAMPLES = r"""
- name: Digest of the archive from its published checksum file
  ansible.builtin.set_fact:
    archive_sha256: >-
      {{ lookup('ansible.builtin.file', cache_dir ~ '/' ~ archive ~ '.sha256')
         | apes.infra.otel_checksum(archive) }}
"""

RETURN = r"""
_value:
  description: The digest, lower-case hex.
  type: str
  sample: 0c9b1c8bc3c2a1e7d0e9a8d2f7a1f0e6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.module_utils._otel_artifacts import ChecksumError, parse_checksum_file


def otel_checksum(content, filename, algorithm="sha256"):
    try:
        return parse_checksum_file(str(content), str(filename), str(algorithm))
    except ChecksumError as exc:
        raise AnsibleFilterError(f"otel_checksum: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"otel_checksum": otel_checksum}
