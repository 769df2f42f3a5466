"""Helpers shared by the Molecule scenarios' testinfra tests.

Tests run from molecule/<scenario>/ with Molecule's environment (MOLECULE_INVENTORY_FILE,
ANSIBLE_CONFIG, ...), so they can run playbooks against the scenario's instances exactly as
converge does, e.g. to prove that bad input fails before any change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

PROJECT = Path(__file__).resolve().parent.parent
# The collection's own code (the site PKI's helpers), importable as ansible_collections.apes.infra.
if str(PROJECT / ".collections") not in sys.path:
    sys.path.insert(0, str(PROJECT / ".collections"))

from ansible_collections.apes.infra.plugins.module_utils import _pki


def _run_playbook(
    playbook: str | Path,
    extra_vars: dict | None = None,
    limit: str | None = None,
    check: bool = False,
    tags: str | None = None,
    diff: bool = False,
    env_extra: dict | None = None,
) -> subprocess.CompletedProcess:
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if limit:
        cmd += ["--limit", limit]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if tags:
        cmd += ["--tags", tags]
    env = dict(os.environ, **(env_extra or {}))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / ".collections"))
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="session")
def run_playbook():
    """run_playbook(path, extra_vars=None, limit=None, check=False, tags=None, diff=False, env_extra=None)
    -> CompletedProcess."""
    return _run_playbook


def _run_counted(playbook: str | Path, **kwargs) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a playbook with benchmarks/callbacks/apes_counts.py on: (its result, its module runs by role, split into
    remote, delegated and controller). The counts do not depend on the machine's load."""
    with tempfile.TemporaryDirectory() as tmp:
        counts_file = Path(tmp) / "counts.json"
        env = {
            **(kwargs.pop("env_extra", None) or {}),
            "ANSIBLE_CALLBACK_PLUGINS": str(PROJECT / "benchmarks" / "callbacks"),
            "ANSIBLE_CALLBACKS_ENABLED": "apes_counts",
            "APES_COUNTS_FILE": str(counts_file),
        }
        result = _run_playbook(playbook, env_extra=env, **kwargs)
        counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    return result, counts


@pytest.fixture(scope="session")
def run_counted():
    """run_counted(path, **run_playbook's arguments) -> (CompletedProcess, module runs by role)."""
    return _run_counted


def _ansible_module(host_or_name, module: str, args: dict, check: bool = False) -> dict:
    """Run one module on one instance through Ansible (as converge does) and return its result."""
    name = host_or_name if isinstance(host_or_name, str) else host_or_name.backend.get_hostname()
    cmd = ["ansible", "-i", os.environ["MOLECULE_INVENTORY_FILE"], name, "-m", module, "-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / ".collections"))
    env.update(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"no JSON from ansible (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
        ) from exc
    return data["plays"][0]["tasks"][0]["hosts"][name]


@pytest.fixture(scope="session")
def ansible_module():
    """ansible_module(host, module, args, check=False) -> the module's result dict."""
    return _ansible_module


@pytest.fixture(scope="session")
def project_dir() -> Path:
    return PROJECT


def host_name(host) -> str:
    return host.backend.get_hostname()


def _wait_for(predicate, timeout: float, what: str, step: float = 1.0):
    """Poll predicate until it returns something truthy and return that; fail the test on timeout,
    naming what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last value: {value!r})")
        time.sleep(step)


# A pgBackRest backup label: full, or a differential/incremental on top of one.
_BACKUP_LABEL = re.compile(r"\b(\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?)\b")


def _restored_backup_set(playbook_output: str) -> str:
    """The backup label that postgresql_restore.yml reports ("Restored backup set: <label>");
    fails the test when the report is missing or names no label."""
    lines = [line for line in playbook_output.splitlines() if "Restored backup set:" in line]
    assert lines, "the restore playbook did not report the backup set"
    found = _BACKUP_LABEL.search(lines[-1].split("Restored backup set:", 1)[1])
    assert found, f"the restore playbook reported no backup label: {lines[-1]!r}"
    return found.group(1)


def _seconds_since_created(container: str) -> int:
    """Seconds since Docker created the container: when this scenario's run began for it. Backups
    made during the run are younger than this, however long converge took."""
    created = subprocess.run(
        ["docker", "inspect", "-f", "{{.Created}}", container], capture_output=True, text=True, check=True
    ).stdout.strip()
    # Docker prints RFC 3339 with nanoseconds: keep microseconds for fromisoformat.
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", created).replace("Z", "+00:00")
    return int(time.time() - datetime.fromisoformat(stamp).timestamp()) + 1


@pytest.fixture(scope="session")
def wait_for():
    """wait_for(predicate, timeout, what, step=1.0) -> the predicate's first truthy value; fails on timeout."""
    return _wait_for


@pytest.fixture(scope="session")
def restored_backup_set():
    """restored_backup_set(playbook stdout) -> the label postgresql_restore.yml restored."""
    return _restored_backup_set


@pytest.fixture(scope="session")
def seconds_since_created():
    """seconds_since_created(container) -> seconds since the scenario created it."""
    return _seconds_since_created


def _reissue_with_days_left(cert_path: Path, key_path: Path, ca_cert_path: Path, ca_key_path: Path, days: int) -> str:
    """Sign the certificate at cert_path again with its CA, as `openssl x509 -days N` would: the same subject, key
    and extensions, a new serial, valid for `days` more days (as if issued long ago). Written in place; returns the
    new serial in hexadecimal."""
    cert = _pki.load_certificate(cert_path.read_bytes(), str(cert_path))
    _pki.load_private_key(key_path.read_bytes(), str(key_path))  # the key must be there, and readable
    ca_cert = _pki.load_certificate(ca_cert_path.read_bytes(), str(ca_cert_path))
    ca_key = _pki.load_private_key(ca_key_path.read_bytes(), str(ca_key_path))
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(ca_cert.subject)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
    )
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    renewed = builder.sign(ca_key, _pki._hash_for(ca_key))  # the digest the PKI itself signs with
    cert_path.write_bytes(_pki.certificate_pem(renewed))
    return _pki.serial_hex(renewed)


def _controller_copy(installed_pem: str) -> tuple[Path, Path, Path, Path]:
    """The controller's files behind a certificate installed on a host: (certificate, its key, CA certificate, CA
    key), found by content under the inventory's .secrets directory."""
    secrets = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent / ".secrets"
    crt = next(p for p in secrets.rglob("*.crt") if p.name != "ca.crt" and p.read_text() == installed_pem)
    key = next(k for k in (crt.with_suffix(".key"), crt.parent.parent / "private" / f"{crt.stem}.key") if k.exists())
    top = next(d for d in (crt.parent, crt.parent.parent) if (d / "ca.key").exists())
    return crt, key, top / "ca.crt", top / "ca.key"


@pytest.fixture(scope="session")
def reissue_with_days_left():
    """reissue_with_days_left(cert, key, ca_cert, ca_key, days) -> serial of the certificate now at cert."""
    return _reissue_with_days_left


@pytest.fixture(scope="session")
def controller_copy():
    """controller_copy(installed PEM) -> (certificate, key, CA certificate, CA key) paths on the controller."""
    return _controller_copy
