"""Every module's DOCUMENTATION, EXAMPLES and RETURN are YAML that ansible-doc renders, and every
role's argument specs render too (the sanity test checks more, but takes minutes)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted((ROOT / "plugins" / "modules").glob("*.py"))
ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def doc_strings(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN")
    }


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_docs_are_yaml(path):
    docs = doc_strings(path)
    assert set(docs) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    for name, text in docs.items():
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.name} {name} is not YAML: {exc}")
    assert yaml.safe_load(docs["DOCUMENTATION"])["module"] == path.stem


@pytest.mark.skipif(shutil.which("ansible-doc") is None, reason="ansible-doc is not installed here")
def test_ansible_doc_renders_modules_and_roles():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".collections")
    names = [f"apes.infra.{p.stem}" for p in MODULES]
    proc = subprocess.run(["ansible-doc", "--json", *names], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)) == sorted(names)
    roles = [f"apes.infra.{r}" for r in ROLES]
    proc = subprocess.run(
        ["ansible-doc", "-t", "role", "--json", *roles], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)) == sorted(roles)
