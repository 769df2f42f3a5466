"""Unit tests for plugins/module_utils/_otel_artifacts.py (checksum files, build provenance)."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.apes.infra.plugins.module_utils._otel_artifacts import (
    ChecksumError,
    parse_checksum_file,
    parse_go_version_m,
    release_drift,
    split_checksum,
)

ARCHIVE = "otelcol-contrib_0.165.0_linux_amd64.tar.gz"
DIGEST = hashlib.sha256(b"archive").hexdigest()
OTHER = hashlib.sha256(b"other").hexdigest()


@pytest.mark.parametrize(
    "content",
    [
        f"{DIGEST}\n",  # per-artifact file: the digest alone
        f"{DIGEST}  {ARCHIVE}\n",  # per-artifact file in sha256sum format
        f"{OTHER}  otelcol-contrib_0.165.0_linux_arm64.tar.gz\n{DIGEST}  {ARCHIVE}\n",  # combined file
        f"{DIGEST} *{ARCHIVE}\n",  # binary-mode marker
        f"{DIGEST}  ./dist/{ARCHIVE}\n",  # a path: the last component counts
        f"# comment\nSHA256 ({ARCHIVE}) = {DIGEST}\n",  # BSD style
        f"{DIGEST.upper()}  {ARCHIVE}\n",  # upper-case hex
    ],
)
def test_digest_found_in_every_layout(content):
    assert parse_checksum_file(content, ARCHIVE) == DIGEST


def test_same_digest_twice_is_fine():
    assert parse_checksum_file(f"{DIGEST}  {ARCHIVE}\n{DIGEST} *{ARCHIVE}\n", ARCHIVE) == DIGEST


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("not-a-digest\n", "not a sha256 digest"),
        (f"{OTHER}  otelcol_0.165.0_linux_amd64.tar.gz\n", "no sha256 digest for"),
        (f"{DIGEST}  {ARCHIVE}\n{OTHER}  {ARCHIVE}\n", "2 different digests"),
        (f"{DIGEST[:-2]}  {ARCHIVE}\n", "not a sha256 digest"),
        (f"SHA512 ({ARCHIVE}) = {DIGEST}\n", "no sha256 digest"),
    ],
)
def test_untrustworthy_files_are_refused(content, message):
    with pytest.raises(ChecksumError, match=message):
        parse_checksum_file(content, ARCHIVE)


def test_sha512():
    digest = hashlib.sha512(b"archive").hexdigest()
    assert parse_checksum_file(f"{digest}  {ARCHIVE}\n", ARCHIVE, "sha512") == digest
    with pytest.raises(ChecksumError, match="not a sha256 digest"):
        parse_checksum_file(f"{digest}\n", ARCHIVE)


def test_unknown_algorithm():
    with pytest.raises(ChecksumError, match="unsupported algorithm"):
        parse_checksum_file(DIGEST, ARCHIVE, "md5")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (f"sha256:{DIGEST}", ("sha256", DIGEST)),
        ("SHA256:https://example.org/a.tar.gz.sha256", ("sha256", "https://example.org/a.tar.gz.sha256")),
        ("sha512:file:///srv/a.sha512", ("sha512", "file:///srv/a.sha512")),
    ],
)
def test_split_checksum(spec, expected):
    assert split_checksum(spec) == expected


@pytest.mark.parametrize("spec", ["", DIGEST, "md5:abc", "sha256:", None])
def test_split_checksum_refuses(spec):
    with pytest.raises(ChecksumError, match="is not a checksum"):
        split_checksum(spec)


GO_VERSION_M = """\
/usr/bin/otelcol: go1.27.3
\tpath\tgo.opentelemetry.io/collector/cmd/builder
\tmod\tgo.opentelemetry.io/collector/cmd/builder\t(devel)\t
\tdep\tgithub.com/open-telemetry/opentelemetry-collector-contrib/receiver/hostmetricsreceiver\tv0.165.0\th1:x=
\tdep\tgithub.com/open-telemetry/opentelemetry-collector-contrib/pkg/stanza\tv0.165.1\th1:x=
\tdep\tgo.opentelemetry.io/collector/otelcol\tv0.165.0\th1:x=
\tdep\tgo.opentelemetry.io/collector/pdata\tv1.71.0\th1:x=
\tdep\tgo.opentelemetry.io/collector/component\tv1.71.0\th1:x=
\tdep\tgo.opentelemetry.io/otel\tv1.40.0\th1:x=
\tdep\tgithub.com/prometheus/prometheus\tv0.310.0\th1:x=
\tbuild\tCGO_ENABLED=0
"""


def test_parse_go_version_m_with_replacement():
    text = GO_VERSION_M + "\tdep\tgo.opentelemetry.io/collector/featuregate\tv1.70.0\th1:x=\n\t=>\t./local\t(devel)\t\n"
    modules = parse_go_version_m(text)
    assert modules["go.opentelemetry.io/collector/otelcol"] == "v0.165.0"
    assert modules["go.opentelemetry.io/collector/featuregate"] == "(devel)"
    assert "go.opentelemetry.io/collector/cmd/builder" not in modules


def test_one_release_has_no_drift():
    # Core and contrib at 0.165, a contrib patch release, stable modules at one v1; other OTel
    # modules (go.opentelemetry.io/otel) and Prometheus's v0 numbering are not collector modules.
    assert release_drift(GO_VERSION_M, "0.165.0") == []
    assert release_drift(GO_VERSION_M, "v0.165.1") == []


def test_mixed_releases_are_reported():
    text = GO_VERSION_M + (
        "\tdep\tgithub.com/open-telemetry/opentelemetry-collector-contrib/receiver/redisreceiver\tv0.161.0\th1:x=\n"
        "\tdep\tgo.opentelemetry.io/collector/featuregate\tv1.67.0\th1:x=\n"
        "\tdep\tgo.opentelemetry.io/collector/exporter/otlpexporter\tv0.165.0-rc.1\th1:x=\n"
    )
    assert release_drift(text, "0.165.0") == [
        "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/redisreceiver v0.161.0",
        "go.opentelemetry.io/collector/exporter/otlpexporter v0.165.0-rc.1",
        "go.opentelemetry.io/collector/featuregate v1.67.0",
    ]


def test_whole_binary_from_another_release():
    assert len(release_drift(GO_VERSION_M, "0.161.0")) == 3


@pytest.mark.parametrize(
    ("text", "release", "message"),
    [
        (GO_VERSION_M, "1.71.0", "not a collector release"),
        (GO_VERSION_M, "latest", "not a collector release"),
        ("", "0.165.0", "no OpenTelemetry Collector module"),
    ],
)
def test_refuses_nonsense(text, release, message):
    with pytest.raises(ValueError, match=message):
        release_drift(text, release)
