#!/usr/bin/env python
"""Keep each role's README in step with its meta/argument_specs.yml.

Every README ends with a generated reference: one table per entry point, one row per option
(name, type, default, required, first sentence of the description), between the markers below.

    scripts/role_docs.py          rewrite the generated sections
    scripts/role_docs.py --check  exit 1 when a README is out of step (the unit tests run this)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- BEGIN generated from meta/argument_specs.yml by scripts/role_docs.py: do not edit -->"
END = "<!-- END generated -->"


def _plain(text: str) -> str:
    """Ansible doc markup (O(x), V(x), C(x), M(x), I(x)) to Markdown code, one line."""
    text = re.sub(r"\b[OVCMI]\(([^)]*)\)", r"`\1`", " ".join(str(text).split()))
    return text.replace("|", "\\|")


def _first_sentence(description) -> str:
    text = " ".join(description) if isinstance(description, list) else str(description or "")
    text = _plain(text)
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


def _default(option: dict) -> str:
    if option.get("required"):
        return "required"
    if "default" not in option:
        return ""
    value = option["default"]
    shown = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    shown = shown.removesuffix("...").strip()
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"`{shown}`".replace("|", "\\|")


def render(role: Path) -> str:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    out = [BEGIN, "", "## Reference (all variables)", ""]
    for entry_point, spec in specs.items():
        out += [f"### Entry point `{entry_point}`", "", "| variable | type | default | |", "|---|---|---|---|"]
        for name, option in (spec.get("options") or {}).items():
            kind = option.get("type", "str")
            if kind == "list" and option.get("elements"):
                kind = f"list of {option['elements']}"
            out.append(f"| `{name}` | {kind} | {_default(option)} | {_first_sentence(option.get('description'))} |")
        out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def updated(readme_text: str, section: str) -> str:
    if BEGIN in readme_text:
        head = readme_text[: readme_text.index(BEGIN)]
        tail = readme_text[readme_text.index(END) + len(END) :].lstrip("\n")
        return head + section + (("\n" + tail) if tail else "")
    return readme_text.rstrip("\n") + "\n\n" + section


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for role in sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        readme = role / "README.md"
        text = readme.read_text()
        new = updated(text, render(role))
        if new != text:
            stale.append(readme.relative_to(ROOT))
            if not check:
                readme.write_text(new)
    if check and stale:
        print("out of step with meta/argument_specs.yml (run scripts/role_docs.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
