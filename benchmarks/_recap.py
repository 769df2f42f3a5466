"""Shared by the benchmark scripts: read ansible-playbook's PLAY RECAP."""

from __future__ import annotations

import re

_RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.M)


def changed_per_host(stdout: str) -> dict[str, int]:
    """The changed count of every host in a PLAY RECAP."""
    return {m.group(1): int(m.group(2)) for m in _RECAP.finditer(stdout)}
