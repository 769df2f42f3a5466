"""Unit tests for the apes.infra.otel_checksum and apes.infra.otel_release_drift filters."""

from __future__ import annotations

import hashlib

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.apes.infra.plugins.filter import otel_checksum, otel_release_drift

ARCHIVE = "otelcol-contrib_0.165.0_linux_amd64.tar.gz"
DIGEST = hashlib.sha256(b"archive").hexdigest()


def test_registered_under_their_names():
    assert otel_checksum.FilterModule().filters() == {"otel_checksum": otel_checksum.otel_checksum}
    assert otel_release_drift.FilterModule().filters() == {"otel_release_drift": otel_release_drift.otel_release_drift}


def test_checksum_filter():
    assert otel_checksum.otel_checksum(f"{DIGEST}  {ARCHIVE}\n", ARCHIVE) == DIGEST


def test_checksum_filter_fails_naming_the_file():
    with pytest.raises(AnsibleFilterError, match=f"otel_checksum: no sha256 digest for {ARCHIVE}"):
        otel_checksum.otel_checksum(f"{DIGEST}  other.tar.gz\n", ARCHIVE)


def test_release_drift_filter():
    text = "\tdep\tgo.opentelemetry.io/collector/otelcol\tv0.164.0\th1:x=\n"
    assert otel_release_drift.otel_release_drift(text, "0.165.0") == ["go.opentelemetry.io/collector/otelcol v0.164.0"]
    with pytest.raises(AnsibleFilterError, match="no OpenTelemetry Collector module"):
        otel_release_drift.otel_release_drift("", "0.165.0")
