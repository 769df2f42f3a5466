"""Load the Python commands that roles install on hosts (files without a .py suffix) as modules."""

from __future__ import annotations

import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path

ROLES = Path(__file__).resolve().parents[3] / "roles"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_role_script(role: str, name: str):
    path = ROLES / role / "files" / name
    module_name = name.replace("-", "_")
    loader = SourceFileLoader(module_name, str(path))
    spec = importlib.util.spec_from_loader(module_name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
