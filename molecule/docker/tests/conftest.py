"""Helpers for the docker scenario's tests: instances by name, a playbook runner with tags and
check/diff mode, a test image built without a registry, throwaway OpenPGP keys and TLS material."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import testinfra
import yaml
from docker_helpers import ensure_image

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent
PROJECT = SCENARIO.parent.parent


def _scenario_vars() -> dict:
    return yaml.safe_load((SCENARIO / "vars" / "scenario.yml").read_text())


@pytest.fixture(scope="session")
def scenario_vars() -> dict:
    """The settings converge.yml runs with (vars/scenario.yml)."""
    return _scenario_vars()


@pytest.fixture(scope="session")
def instances() -> dict:
    """Every instance of the scenario as a testinfra host, by name (for tests that act on all at once)."""
    platforms = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["platforms"]
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return {p["name"]: testinfra.get_host(f"ansible://{p['name']}", ansible_inventory=inventory) for p in platforms}


def _playbook(
    extra_vars: dict | None = None,
    tags: list[str] | None = None,
    check: bool = False,
    diff: bool = False,
    limit: str | None = None,
    playbook: Path = HERE / "docker.yml",
) -> subprocess.CompletedProcess:
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if tags:
        cmd += ["--tags", ",".join(tags)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if limit:
        cmd += ["--limit", limit]
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / ".collections"))
    env.update(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="session")
def playbook():
    """playbook(extra_vars=None, tags=None, check=False, diff=False, limit=None) runs the docker role alone
    (tests/docker.yml, with the scenario's vars/scenario.yml) and returns the CompletedProcess."""
    return _playbook


@pytest.fixture(scope="module")
def image(host) -> str:
    return ensure_image(host)


@pytest.fixture(scope="session")
def gnupg_home(tmp_path_factory) -> dict[str, str]:
    """The environment of gpg with a home of its own for this run (private keys stay there)."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    return dict(os.environ, GNUPGHOME=str(home))


def _gpg(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["gpg", "--batch", *args], env=env, input=stdin, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="session")
def throwaway_keys(gnupg_home) -> dict[str, tuple[str, str]]:
    """Two OpenPGP public keys made for this run with gpg: {"trusted": (armored, fingerprint),
    "other": (armored, fingerprint)}, the primary keys' fingerprints. "trusted" also has a signing
    subkey, like Docker's release key, whose subkey signs the repository."""
    keys = {}
    for label in ("trusted", "other"):
        uid = f"apes docker test {label} <{label}@example.invalid>"
        _gpg(gnupg_home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "1d")
        colons = _gpg(gnupg_home, "--with-colons", "--list-keys", uid)
        fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
        if label == "trusted":
            _gpg(gnupg_home, "--passphrase", "", "--quick-add-key", fingerprint, "ed25519", "sign", "1d")
        keys[label] = (_gpg(gnupg_home, "--armor", "--export", uid), fingerprint)
    return keys


@pytest.fixture(scope="session")
def clearsign(gnupg_home, throwaway_keys):
    """clearsign(label, text) -> text signed inline (an InRelease file) with the key's newest signing
    key: the subkey for "trusted", the primary key for "other"."""

    def sign(label: str, text: str) -> str:
        return _gpg(gnupg_home, "--local-user", throwaway_keys[label][1], "--clearsign", stdin=text)

    return sign


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (PEM texts)."""
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=apes-test-ca")
    for name, usage, san in (("server", "serverAuth", "IP:127.0.0.1,DNS:localhost"), ("client", "clientAuth", "")):
        openssl("req", *ec, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN=apes-test-{name}")
        ext = f"extendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else "")
        (d / f"{name}.ext").write_text(ext)
        sign = ["-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext"]
        openssl("x509", "-req", "-in", f"{name}.csr", "-out", f"{name}.pem", *sign)
    return {p.stem: p.read_text() for p in d.glob("*.pem")}
