"""Every role's meta/argument_specs.yml types every variable of its defaults/main.yml, with the same default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(
    p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if (p / "defaults" / "main.yml").exists()
)


@pytest.mark.parametrize("role", ROLES, ids=[role.name for role in ROLES])
def test_defaults_match_argument_specs(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = {}
    for spec in specs.values():
        options.update(spec.get("options") or {})
    missing = sorted(set(defaults) - set(options))
    assert not missing, f"in defaults/main.yml but not in meta/argument_specs.yml: {missing}"
    differing = {
        name: (options[name].get("default"), value)
        for name, value in defaults.items()
        if not options[name].get("required") and options[name].get("default") != value
    }
    assert not differing, f"argument_specs default != defaults/main.yml: {differing}"
    undocumented = sorted(name for name, option in options.items() if "default" in option and name not in defaults)
    assert not undocumented, f"a default in argument_specs but not in defaults/main.yml: {undocumented}"
