"""The pki_certificates module end to end, run as Ansible runs it (a subprocess reading its
arguments from a file) with the real clock: the four ways, the fact it publishes, diff mode, and
that neither key material nor the CA passphrase appears in its output. The decisions that depend
on time are tested with a fixed clock in tests/unit/plugins/module_utils/test_pki.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
MODULE = ROOT / "plugins" / "modules" / "pki_certificates.py"
CERTS = [
    {
        "name": "db1-postgresql",
        "common_name": "db1.example.net",
        "subject_alt_names": ["DNS:db1.example.net", "IP:10.0.0.11"],
        "extended_key_usage": ["serverAuth", "clientAuth"],
    },
    {"name": "cache1-redis", "subject_alt_names": ["DNS:cache1.example.net"]},
]
PHRASE = "correct-horse-battery-staple-42"


def run_module(tmp_path, check=False, diff=False, **args):
    args_file = tmp_path / "args.json"
    args.setdefault("dir", str(tmp_path / "pki"))
    args_file.write_text(
        json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_diff": diff}})
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".collections") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, env=env, check=False
    )
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stdout
    except json.JSONDecodeError as exc:
        raise AssertionError(f"no JSON from the module: {proc.stdout} {proc.stderr}") from exc


def test_check_apply_and_idempotence(tmp_path):
    """Check, apply, idempotent check, idempotent apply."""
    pki = tmp_path / "pki"
    rc, check, out = run_module(tmp_path, check=True, diff=True, certificates=CERTS)
    assert rc == 0, check
    assert check["changed"]
    assert check["ca"]["reason"] == "missing"
    assert {n: c["reason"] for n, c in check["certificates"].items()} == {
        "db1-postgresql": "missing",
        "cache1-redis": "missing",
    }
    assert not pki.exists(), "check mode writes nothing"
    assert [d["before_header"] for d in check["diff"]] == [
        f"CA {pki / 'ca.crt'}",
        "certificate db1-postgresql",
        "certificate cache1-redis",
    ]
    assert "PRIVATE KEY" not in out

    rc, applied, out = run_module(tmp_path, diff=True, certificates=CERTS)
    assert rc == 0, applied
    assert applied["changed"]
    assert (pki / "ca.crt").exists()
    assert (pki / "private" / "cache1-redis.key").exists()
    assert "PRIVATE KEY" not in out
    assert "BEGIN" not in out, "no PEM of any kind in the output"
    fact = applied["ansible_facts"]["apes_pki"]
    assert fact == {"ca_path": str(pki / "ca.crt"), "certificates": applied["certificates"]}

    for check_mode in (True, False):
        rc, again, _out = run_module(tmp_path, check=check_mode, diff=True, certificates=CERTS)
        assert rc == 0, again
        assert not again["changed"]
        assert again["diff"] == []
        assert again["certificates"]["db1-postgresql"]["serial"] == applied["certificates"]["db1-postgresql"]["serial"]
        assert again["certificates"]["db1-postgresql"]["reason"] is None


def test_changed_san_in_diff_mode(tmp_path):
    assert run_module(tmp_path, certificates=CERTS)[0] == 0
    wanted = [{**CERTS[0], "subject_alt_names": [*CERTS[0]["subject_alt_names"], "DNS:db1"]}, CERTS[1]]
    rc, result, _out = run_module(tmp_path, diff=True, certificates=wanted)
    assert rc == 0, result
    assert result["certificates"]["db1-postgresql"]["reason"] == "names-changed"
    assert result["certificates"]["cache1-redis"]["changed"] is False
    (entry,) = result["diff"]
    assert entry["before_header"] == "certificate db1-postgresql"
    assert "subject_alt_names: DNS:db1.example.net, IP:10.0.0.11\n" in entry["before"]
    assert "subject_alt_names: DNS:db1.example.net, IP:10.0.0.11, DNS:db1\n" in entry["after"]
    assert entry["after"].endswith("issued because: names-changed\n")


def test_passphrase_never_appears(tmp_path):
    rc, result, out = run_module(tmp_path, diff=True, certificates=CERTS, ca_key_passphrase=PHRASE)
    assert rc == 0, result
    assert PHRASE not in out
    assert b"ENCRYPTED" in (tmp_path / "pki" / "ca.key").read_bytes()
    rc, result, out = run_module(tmp_path, certificates=CERTS)
    assert rc == 1
    assert result["msg"] == f"{tmp_path / 'pki' / 'ca.key'} is encrypted; give its passphrase (ca_key_passphrase)"


def test_bad_input_fails_naming_it(tmp_path):
    rc, result, _out = run_module(tmp_path, certificates=[{"name": "../../etc/passwd"}])
    assert rc == 1
    assert result["msg"].startswith("certificate name '../../etc/passwd' is not a safe file name")
    assert not (tmp_path / "pki").exists()
    rc, result, _out = run_module(tmp_path, certificates=[{"name": "x", "key_usage": ["keyEncipherment"]}])
    assert rc == 1
    assert result["msg"].startswith("certificate x: key usage keyEncipherment is refused")
    rc, result, _out = run_module(tmp_path, ca_cert_path=str(tmp_path / "ca.crt"))
    assert rc == 1
    assert "ca_cert_path" in result["msg"]
    assert "ca_key_path" in result["msg"]
    rc, result, _out = run_module(
        tmp_path, ca_cert_path=str(tmp_path / "none.crt"), ca_key_path=str(tmp_path / "none.key")
    )
    assert rc == 1
    assert result["msg"] == f"ca_cert_path {tmp_path / 'none.crt'} does not exist"
