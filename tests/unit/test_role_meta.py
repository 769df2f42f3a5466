"""Every role carries the metadata Galaxy reads (meta/main.yml galaxy_info), in step with the
collection's own metadata and with what the tests run. Roles are found by directory, so a new
role is checked without changes here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
RUNTIME = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
# The Molecule scenarios run every role on the base images apes-infra/debian:12 and :13.
TESTED_PLATFORMS = [{"name": "Debian", "versions": ["bookworm", "trixie"]}]


def galaxy_info(role: str) -> dict:
    path = ROOT / "roles" / role / "meta" / "main.yml"
    assert path.is_file(), f"roles/{role} has no meta/main.yml: Galaxy shows no description for it"
    return yaml.safe_load(path.read_text())["galaxy_info"]


def test_roles_are_found():
    assert "os_tuning" in ROLES


@pytest.mark.parametrize("role", ROLES)
def test_description_is_the_entry_points_short_description(role):
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    assert galaxy_info(role)["description"] == specs["argument_specs"]["main"]["short_description"]


@pytest.mark.parametrize("role", ROLES)
def test_platforms_are_the_tested_ones(role):
    assert galaxy_info(role)["platforms"] == TESTED_PLATFORMS


@pytest.mark.parametrize("role", ROLES)
def test_min_ansible_version_is_requires_ansible(role):
    lowest = re.fullmatch(r">=\s*(\d+\.\d+)(\.0)?", RUNTIME["requires_ansible"])
    assert lowest, f"meta/runtime.yml requires_ansible {RUNTIME['requires_ansible']!r} is not '>=X.Y'"
    assert galaxy_info(role)["min_ansible_version"] == lowest.group(1)


@pytest.mark.parametrize("role", ROLES)
def test_author_and_license_are_the_collections(role):
    info = galaxy_info(role)
    assert info["author"] in GALAXY["authors"]
    assert [info["license"]] == GALAXY["license"]
    assert info["standalone"] is False
