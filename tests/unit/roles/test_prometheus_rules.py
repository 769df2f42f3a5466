"""The collection's Prometheus rules (prometheus role, templates/apes.rules.yml.j2).

Rendered as the role renders them (the template lookup with [[ ]] as variable delimiters, the role's
defaults), then checked by promtool and unit-tested with `promtool test rules` against the cases in
tests/unit/roles/prometheus/*.test.yml. promtool is Debian's, extracted by scripts/bootstrap
(ensure_promtool in scripts/lib.sh); without it these tests fail. promtool's tests start at time 0:
nothing here depends on today's date.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "prometheus"
TEMPLATES = ROLE / "templates"
TEMPLATE = "apes.rules.yml.j2"
CASES = Path(__file__).resolve().parent / "prometheus"
# The name every test file's rule_files points at; the rendered rules are written next to it.
RULE_FILE = "apes.rules.yml"
GROUPS = ["apes.backups", "apes.postgresql", "apes.redis", "apes.hosts", "apes.collector"]
SEVERITIES = {"warning", "critical"}


def ansible_comment(text: str) -> str:
    """Ansible's `comment` filter, plain style: the text's lines prefixed with '# ', between '#' lines."""
    return "\n".join(["#", *(f"# {line}" for line in text.splitlines()), "#"])


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        # A YAML file: nothing is escaped (select_autoescape escapes .html and .xml templates only).
        autoescape=jinja2.select_autoescape(default=False),
        variable_start_string="[[",
        variable_end_string="]]",
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["comment"] = ansible_comment
    return env


def defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def render(**overrides) -> str:
    variables = {**defaults(), "ansible_managed": "Ansible managed", **overrides}
    return environment().get_template(TEMPLATE).render(variables)


def rules(text: str) -> list[dict]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def case_files() -> list[Path]:
    return sorted(CASES.glob("*.test.yml"))


def cases() -> list[dict]:
    return [yaml.safe_load(path.read_text()) for path in case_files()]


RENDERED = render()
ALERTS = {rule["alert"]: rule for rule in rules(RENDERED) if "alert" in rule}
RECORDS = {rule["record"]: rule for rule in rules(RENDERED) if "record" in rule}
THRESHOLDS = sorted(name for name in defaults() if name.startswith("prometheus_alert_"))


def _version_key(path: Path) -> list:
    # promtool-2.42.0+ds-5+deb12u1 < promtool-2.45.3+ds-2: numbers compare as numbers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.parent.name)]


def promtool() -> str:
    """APES_PROMTOOL, else promtool on PATH, else the newest one scripts/bootstrap extracted."""
    hint = "run `bash scripts/bootstrap` (ensure_promtool extracts Debian's promtool into APES_CACHE/tools)"
    explicit = os.environ.get("APES_PROMTOOL")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"APES_PROMTOOL={explicit} is not an executable file; {hint}")
        return explicit
    on_path = shutil.which("promtool")
    if on_path:
        return on_path
    if os.environ.get("APES_CACHE"):
        cache = Path(os.environ["APES_CACHE"])
    elif os.geteuid() == 0:
        cache = Path("/var/cache/apes-infra")
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "apes-infra"
    found = sorted(cache.glob("tools/promtool-*/promtool"), key=_version_key)
    if not found:
        pytest.fail(f"promtool not found (APES_PROMTOOL, PATH, {cache}/tools/promtool-*/promtool): {hint}")
    return str(found[-1])


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def rule_dir(tmp_path: Path) -> Path:
    (tmp_path / RULE_FILE).write_text(RENDERED)
    return tmp_path


def test_rendered_rules_have_the_collection_groups():
    assert RENDERED.startswith("#\n# Ansible managed\n#\n")
    assert [group["name"] for group in yaml.safe_load(RENDERED)["groups"]] == GROUPS


def test_promtool_checks_the_rendered_rules(rule_dir):
    result = run_promtool("check", "rules", RULE_FILE, cwd=rule_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS) + len(RECORDS)} rules found" in result.stdout


@pytest.mark.parametrize("case_file", case_files(), ids=lambda path: path.name)
def test_promtool_unit_tests(case_file, rule_dir):
    assert yaml.safe_load(case_file.read_text())["rule_files"] == [RULE_FILE]
    shutil.copy(case_file, rule_dir / case_file.name)
    result = run_promtool("test", "rules", case_file.name, cwd=rule_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_group_has_promtool_cases():
    # One test file per group (cases for a group's alerts sit together); no stray file is left out.
    expected = sorted(f"{group.removeprefix('apes.')}.test.yml" for group in GROUPS)
    assert sorted(path.name for path in case_files()) == expected


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_has_severity_summary_and_description(alert):
    rule = ALERTS[alert]
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description"):
        assert isinstance(annotations.get(key), str), key
        assert annotations[key].strip(), key


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_is_unit_tested_firing_and_not_firing(alert):
    checks = [
        check
        for case in cases()
        for test in case.get("tests", [])
        for check in test.get("alert_rule_test") or []
        if check["alertname"] == alert
    ]
    assert any(check.get("exp_alerts") for check in checks), f"no promtool case where {alert} fires"
    assert any(not check.get("exp_alerts") for check in checks), f"no promtool case where {alert} does not fire"


@pytest.mark.parametrize("record", sorted(RECORDS))
def test_recording_rule_is_unit_tested(record):
    pattern = re.compile(rf"(?<![\w:]){re.escape(record)}(?![\w:])")
    checks = [
        check
        for case in cases()
        for test in case.get("tests", [])
        for check in test.get("promql_expr_test") or []
        if pattern.search(check["expr"])
    ]
    assert any(check.get("exp_samples") for check in checks), f"no promql_expr_test with samples of {record}"


def test_thresholds_are_the_variables_the_template_uses():
    source = (TEMPLATES / TEMPLATE).read_text()
    used = jinja2.meta.find_undeclared_variables(environment().parse(source))
    assert THRESHOLDS
    assert sorted(name for name in used if name.startswith("prometheus_alert_")) == THRESHOLDS
    assert used - set(THRESHOLDS) == {"ansible_managed"}


def _other(value):
    """A different value of the same kind: a number changed, a Prometheus duration lengthened."""
    if isinstance(value, bool):
        raise TypeError(f"a threshold is a number or a duration, not {value!r}")
    if isinstance(value, int | float):
        return value / 2 if isinstance(value, float) else value * 2
    if isinstance(value, str) and re.fullmatch(r"\d+[smhdwy]", value):
        return f"{int(value[:-1]) * 2}{value[-1]}"
    raise TypeError(f"unexpected threshold value {value!r}")


@pytest.mark.parametrize("name", THRESHOLDS)
def test_threshold_changes_the_rules(name, tmp_path):
    value = defaults()[name]
    changed = render(**{name: _other(value)})
    assert changed != RENDERED
    # Only the rules that use it change: the other rules render as before.
    before, after = rules(RENDERED), rules(changed)
    assert len(before) == len(after)
    assert 0 < sum(old != new for old, new in zip(before, after, strict=True)) < len(before)
    (tmp_path / RULE_FILE).write_text(changed)
    result = run_promtool("check", "rules", RULE_FILE, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
