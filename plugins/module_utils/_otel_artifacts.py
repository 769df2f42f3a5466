# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure helpers for the otel_collector role's artifacts (checksum files, build provenance).

Standard library only. Used by the ``apes.infra.otel_checksum`` and ``apes.infra.otel_release_drift``
filters on the controller.
"""

from __future__ import annotations

import re

DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}

# Module path prefixes of the OpenTelemetry Collector (core) and its contrib repository.
CORE_PREFIX = "go.opentelemetry.io/collector"
CONTRIB_PREFIX = "github.com/open-telemetry/opentelemetry-collector-contrib"

_BSD_LINE = re.compile(r"^(?P<algo>[A-Za-z0-9-]+) \((?P<name>.+)\) = (?P<digest>[0-9A-Fa-f]+)$")
_SEMVER = re.compile(r"^v?(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?P<rest>[-+].*)?$")


class ChecksumError(ValueError):
    """A checksum file that does not give exactly one digest for the artifact."""


def _is_digest(text: str, algorithm: str) -> bool:
    return len(text) == DIGEST_LENGTHS[algorithm] and all(c in "0123456789abcdefABCDEF" for c in text)


def _basename(name: str) -> str:
    name = name.strip()
    if name.startswith("*"):  # binary-mode marker of sha256sum
        name = name[1:]
    return name.rsplit("/", 1)[-1]


def parse_checksum_file(content: str, filename: str, algorithm: str = "sha256") -> str:
    """Return the lower-case digest that ``content`` gives for ``filename``.

    Accepted layouts: a file holding only the digest (the per-artifact files published next to
    each release archive), ``sha256sum`` lines (``<digest>  <name>`` or ``<digest> *<name>``, as in a
    combined ``checksums.txt``) and BSD lines (``SHA256 (<name>) = <digest>``). Names are compared by
    their last path component. Raises ChecksumError when no digest, or two different digests, are
    found for the file, or when a digest has the wrong length for ``algorithm``.
    """
    if algorithm not in DIGEST_LENGTHS:
        raise ChecksumError(f"unsupported algorithm {algorithm!r} (use one of {', '.join(sorted(DIGEST_LENGTHS))})")
    wanted = _basename(filename)
    lines = [line.strip() for line in content.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ChecksumError("the checksum file is empty")

    found: set[str] = set()
    if len(lines) == 1 and len(lines[0].split()) == 1:
        digest = lines[0]
        if not _is_digest(digest, algorithm):
            raise ChecksumError(f"the checksum file holds {digest[:80]!r}, not a {algorithm} digest")
        return digest.lower()

    for line in lines:
        bsd = _BSD_LINE.match(line)
        if bsd:
            if bsd.group("algo").replace("-", "").lower() != algorithm:
                continue
            digest, name = bsd.group("digest"), bsd.group("name")
        else:
            parts = line.split(None, 1)
            if len(parts) != 2:
                continue
            digest, name = parts
        if _basename(name) != wanted:
            continue
        if not _is_digest(digest, algorithm):
            raise ChecksumError(f"the line for {wanted} holds {digest[:80]!r}, not a {algorithm} digest")
        found.add(digest.lower())

    if not found:
        raise ChecksumError(f"no {algorithm} digest for {wanted} in the checksum file")
    if len(found) > 1:
        raise ChecksumError(f"the checksum file gives {len(found)} different digests for {wanted}")
    return found.pop()


def split_checksum(spec: str) -> tuple[str, str]:
    """Split ``<algorithm>:<digest or URL>`` into its two parts (algorithm lower-cased)."""
    algorithm, sep, value = (spec or "").partition(":")
    algorithm = algorithm.strip().lower()
    value = value.strip()
    if not sep or algorithm not in DIGEST_LENGTHS or not value:
        raise ChecksumError(
            f"{spec!r} is not a checksum: use sha256:<hex digest> or sha256:<URL of the checksum file> "
            "(sha512 works the same way)"
        )
    return algorithm, value


def parse_go_version_m(output: str) -> dict[str, str]:
    """Map module path to version from ``go version -m <binary>`` output (replacements win)."""
    modules: dict[str, str] = {}
    for raw in output.splitlines():
        fields = raw.strip().split("\t")
        if len(fields) >= 3 and fields[0] == "dep":
            modules[fields[1]] = fields[2]
        elif len(fields) >= 3 and fields[0] == "=>" and modules:
            # A replace directive: the module that precedes it is built from this one.
            last = next(reversed(modules))
            modules[last] = fields[2] if len(fields) > 2 else modules[last]
    return modules


def release_drift(output: str, release: str) -> list[str]:
    """Collector modules in a binary that are not from the one release ``release`` (e.g. 0.165.0).

    Every v0 module of the collector core and of contrib must have the release's minor version
    (contrib patch releases such as 0.165.1 belong to release 0.165); the core's stable v1 modules
    must all share one version. Returns ``"<module> <version>"`` strings, sorted; empty when the
    binary is consistent. Raises ValueError when ``release`` is not a version or the output names no
    collector module at all (not a collector, or built without module information).
    """
    wanted = _SEMVER.match(release.strip())
    if not wanted or wanted.group("major") != "0":
        raise ValueError(f"{release!r} is not a collector release such as 0.165.0")
    minor = wanted.group("minor")
    modules = {
        path: version
        for path, version in parse_go_version_m(output).items()
        if path == CORE_PREFIX or path.startswith((CORE_PREFIX + "/", CONTRIB_PREFIX + "/"))
    }
    if not modules:
        raise ValueError("no OpenTelemetry Collector module in the build information")

    drift = []
    stable: dict[str, list[str]] = {}
    for path, version in sorted(modules.items()):
        parsed = _SEMVER.match(version)
        if not parsed:
            drift.append(f"{path} {version}")
        elif parsed.group("major") == "0":
            if parsed.group("minor") != minor or parsed.group("rest"):
                drift.append(f"{path} {version}")
        else:
            stable.setdefault(version, []).append(path)
    if len(stable) > 1:
        # The version most modules have is the release's; the others drifted.
        common = max(stable, key=lambda v: len(stable[v]))
        for version, paths in stable.items():
            if version != common:
                drift.extend(f"{path} {version}" for path in paths)
    return sorted(drift)
