# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: otel_release_drift
short_description: Collector modules in a binary that are not from one release
version_added: 0.1.0
author:
  - apes.infra developers (@apes-infra)
description:
  - Reads the output of C(go version -m <binary>) for an OpenTelemetry Collector binary and returns
    the collector modules (core C(go.opentelemetry.io/collector/...) and contrib
    C(github.com/open-telemetry/opentelemetry-collector-contrib/...)) that do not belong to
    O(release).
  - A v0 module belongs to the release when its minor version is the release's (contrib patch
    releases such as V(0.165.1) belong to V(0.165.0)); the core's stable v1 modules must all share
    one version. Modules replaced in C(go.mod) are judged by their replacement.
  - An empty list means the binary is built from one release. Fails when O(release) is not a v0
    version or the output names no collector module.
options:
  _input:
    description: The output of C(go version -m) for the binary.
    type: str
    required: true
  release:
    description: The collector release the binary must be built from, for example V(0.165.0).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse a collector built from mixed releases
  ansible.builtin.assert:
    that: (build_info.stdout | apes.infra.otel_release_drift('0.165.0')) | length == 0
"""

RETURN = r"""
_value:
  description: C(<module> <version>) for each module that drifted, sorted.
  type: list
  elements: str
  sample: ["github.com/open-telemetry/opentelemetry-collector-contrib/receiver/redisreceiver v0.161.0"]
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.module_utils._otel_artifacts import release_drift


def otel_release_drift(output, release):
    try:
        return release_drift(str(output), str(release))
    except ValueError as exc:
        raise AnsibleFilterError(f"otel_release_drift: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"otel_release_drift": otel_release_drift}
