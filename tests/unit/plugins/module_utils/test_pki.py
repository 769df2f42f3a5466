"""Unit tests for the site PKI behind apes.infra.pki_certificates.

Every call passes ``now`` explicitly (a fixed moment years from the day these tests were written),
and openssl verifies at that moment (``-attime``), so no test depends on today's date.
"""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ansible_collections.apes.infra.plugins.module_utils import _pki
from ansible_collections.apes.infra.plugins.module_utils._pki import PkiError, Site

NOW = datetime.datetime(2031, 3, 14, 9, 26, 53, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed here")

DB = {
    "name": "db1-postgresql",
    "common_name": "db1.example.net",
    "subject_alt_names": ["DNS:db1.example.net", "DNS:db1", "IP:10.0.0.11"],
    "extended_key_usage": ["serverAuth", "clientAuth"],
}
# Passphrases of the test CAs' keys.
CORP_PHRASE = "vault-phrase"
OWN_PHRASE = "correct horse"
WRONG_PHRASE = "wrong"
CACHE = {"name": "cache1-redis", "subject_alt_names": ["DNS:cache1.example.net"]}


def site(tmp_path, **kwargs):
    return Site(str(tmp_path / "pki"), **kwargs)


def load(path):
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())


def public_der(cert):
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def openssl_verify(ca, leaf, at, *extra):
    return subprocess.run(
        ["openssl", "verify", "-attime", str(int(at.timestamp())), *extra, "-CAfile", ca, leaf],
        capture_output=True,
        text=True,
        check=False,
    )


def snapshot(directory):
    out = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[path] = (fh.read(), os.stat(path).st_mtime_ns)
    return out


def test_issue_then_nothing_to_do(tmp_path):
    pki = tmp_path / "pki"
    result = site(tmp_path).converge([DB, CACHE], NOW)
    assert result["changed"]
    assert result["ca"]["changed"]
    assert result["ca"]["reason"] == "missing"
    assert result["ca"]["not_after"] == "2041-03-11T09:26:53Z", "3650 days"
    for name in ("db1-postgresql", "cache1-redis"):
        cert = result["certificates"][name]
        assert cert["changed"]
        assert cert["reason"] == "missing"
        assert cert["cert_path"] == str(pki / "certs" / f"{name}.crt")
        assert cert["key_path"] == str(pki / "private" / f"{name}.key")
        assert cert["ca_path"] == str(pki / "ca.crt")
        assert cert["not_after"] == "2032-04-14T09:26:53Z", "397 days"
        assert cert["serial"] == format(load(cert["cert_path"]).serial_number, "X")
    for path, mode in [
        (pki, 0o700),
        (pki / "certs", 0o700),
        (pki / "private", 0o700),
        (pki / "ca.key", 0o600),
        (pki / "ca.crt", 0o644),
        (pki / "private" / "db1-postgresql.key", 0o600),
        (pki / "certs" / "db1-postgresql.crt", 0o644),
    ]:
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path
    assert b"ENCRYPTED" not in (pki / "ca.key").read_bytes()

    before = snapshot(pki)
    for later in (NOW, NOW + 100 * DAY):
        again = site(tmp_path).converge([DB, CACHE], later)
        assert not again["changed"]
        assert not again["ca"]["changed"]
        assert all(not c["changed"] and c["reason"] is None for c in again["certificates"].values())
        assert again["certificates"]["db1-postgresql"]["serial"] == result["certificates"]["db1-postgresql"]["serial"]
        assert again["diff"] == []
    assert snapshot(pki) == before, "nothing is written when nothing needs it"


def test_the_certificate_holds_what_was_asked(tmp_path):
    result = site(tmp_path).converge([DB], NOW)
    cert = load(result["certificates"]["db1-postgresql"]["cert_path"])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "db1.example.net"
    assert _pki.subject_alt_names_of(cert) == ("DNS:db1.example.net", "DNS:db1", "IP:10.0.0.11")
    assert _pki.key_usage_of(cert) == ("digitalSignature",)
    assert _pki.extended_key_usage_of(cert) == ("clientAuth", "serverAuth")
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.public_key().curve.name == "secp256r1"
    ca = load(result["ca"]["cert_path"])
    assert ca.public_key().curve.name == "secp384r1"
    assert _pki.is_ca(ca)
    assert _pki.signed_by(cert, ca)


@needs_openssl
def test_openssl_verifies_the_chain_names_and_purpose(tmp_path):
    result = site(tmp_path).converge([DB], NOW)
    ca, leaf = result["ca"]["cert_path"], result["certificates"]["db1-postgresql"]["cert_path"]
    proc = openssl_verify(ca, leaf, NOW + DAY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"{leaf}: OK"
    for extra in (["-purpose", "sslserver"], ["-purpose", "sslclient"], ["-verify_hostname", "db1"]):
        proc = openssl_verify(ca, leaf, NOW + DAY, *extra)
        assert proc.returncode == 0, (extra, proc.stdout + proc.stderr)
    proc = openssl_verify(ca, leaf, NOW + DAY, "-verify_ip", "10.0.0.12")
    assert proc.returncode != 0, "an address not in the certificate is refused"
    proc = openssl_verify(ca, leaf, NOW + 400 * DAY)
    assert proc.returncode != 0, "expired after 397 days"


def test_a_certificate_close_to_its_end_is_renewed_with_its_key(tmp_path):
    first = site(tmp_path).converge([DB], NOW)["certificates"]["db1-postgresql"]
    old = load(first["cert_path"])
    key_before = (tmp_path / "pki" / "private" / "db1-postgresql.key").read_bytes()
    later = NOW + 396 * DAY  # one day left, fewer than renew_days (30)

    predicted = site(tmp_path).converge([DB], later, check_mode=True)
    assert predicted["certificates"]["db1-postgresql"]["reason"] == "expiring"
    assert predicted["certificates"]["db1-postgresql"]["serial"] is None
    assert load(first["cert_path"]).serial_number == old.serial_number, "check mode writes nothing"

    renewed = site(tmp_path).converge([DB], later)["certificates"]["db1-postgresql"]
    assert renewed["changed"]
    assert renewed["reason"] == "expiring"
    new = load(renewed["cert_path"])
    assert new.serial_number != old.serial_number
    assert renewed["not_after"] == _pki.iso(later + 397 * DAY)
    assert public_der(new) == public_der(old), "the key is kept"
    assert (tmp_path / "pki" / "private" / "db1-postgresql.key").read_bytes() == key_before
    # 31 days left is not yet close to the end.
    assert site(tmp_path).converge([DB], later + 366 * DAY)["certificates"]["db1-postgresql"]["reason"] is None


def test_changed_names_or_usages_reissue(tmp_path):
    site(tmp_path).converge([DB], NOW)
    same_names_reordered = {**DB, "subject_alt_names": ["IP:10.0.0.11", "DNS:DB1", "DNS:db1.example.net."]}
    assert not site(tmp_path).converge([same_names_reordered], NOW)["changed"], "SANs compare as a normalized set"
    cases = [
        ({**DB, "subject_alt_names": [*DB["subject_alt_names"], "IP:10.0.0.12"]}, "names-changed"),
        ({**DB, "common_name": "db1.example.org"}, "names-changed"),
        ({**DB, "extended_key_usage": ["serverAuth"]}, "usage-changed"),
        ({**DB, "key_usage": ["digitalSignature", "keyAgreement"]}, "usage-changed"),
    ]
    for wanted, reason in cases:
        result = site(tmp_path).converge([wanted], NOW, check_mode=True)
        assert result["certificates"]["db1-postgresql"]["reason"] == reason, wanted
        assert result["diff"][0]["after"].endswith(f"issued because: {reason}\n")
    wanted = cases[0][0]
    result = site(tmp_path).converge([wanted], NOW)
    assert result["certificates"]["db1-postgresql"]["reason"] == "names-changed"
    cert = load(result["certificates"]["db1-postgresql"]["cert_path"])
    assert "IP:10.0.0.12" in _pki.subject_alt_names_of(cert)
    assert not site(tmp_path).converge([wanted], NOW)["changed"]
    # Validity is not compared: a new value applies at the next renewal.
    assert not site(tmp_path).converge([{**wanted, "validity_days": 90}], NOW)["changed"]


def test_a_certificate_signed_by_another_ca_is_reissued(tmp_path):
    pki = tmp_path / "pki"
    site(tmp_path).converge([DB], NOW)
    other = Site(str(tmp_path / "other"))
    other.converge([], NOW)
    other_ca = load(tmp_path / "other" / "ca.crt")
    other_key = _pki.load_private_key((tmp_path / "other" / "ca.key").read_bytes(), "other")
    leaf_key = _pki.load_private_key((pki / "private" / "db1-postgresql.key").read_bytes(), "leaf")
    request = _pki.parse_request(DB)
    foreign = _pki.build_leaf_certificate(request, leaf_key, other_ca, other_key, NOW)
    (pki / "certs" / "db1-postgresql.crt").write_bytes(_pki.certificate_pem(foreign))

    result = site(tmp_path).converge([DB], NOW)
    assert result["certificates"]["db1-postgresql"]["reason"] == "ca-changed"
    assert _pki.signed_by(load(pki / "certs" / "db1-postgresql.crt"), load(pki / "ca.crt"))


def test_a_lost_ca_key_makes_a_new_ca_and_reissues_everything(tmp_path):
    pki = tmp_path / "pki"
    site(tmp_path).converge([DB, CACHE], NOW)
    (pki / "ca.key").unlink()
    result = site(tmp_path).converge([DB, CACHE], NOW)
    assert result["ca"]["reason"] == "missing"
    assert {c["reason"] for c in result["certificates"].values()} == {"ca-changed"}
    ca = load(pki / "ca.crt")
    assert all(_pki.signed_by(load(c["cert_path"]), ca) for c in result["certificates"].values())


def test_a_lost_ca_certificate_is_made_again_from_its_key(tmp_path):
    pki = tmp_path / "pki"
    site(tmp_path).converge([DB], NOW)
    (pki / "ca.crt").unlink()
    result = site(tmp_path).converge([DB], NOW)
    assert result["ca"]["reason"] == "missing"
    assert result["certificates"]["db1-postgresql"]["reason"] is None, "same key and name: the leaf still verifies"


@needs_openssl
def test_ca_renewal_keeps_its_key_and_old_certificates_keep_verifying(tmp_path):
    pki = tmp_path / "pki"
    short = {"ca_validity_days": 400, "ca_renew_days": 180}
    first = site(tmp_path, **short).converge([DB], NOW)
    old_ca = load(pki / "ca.crt")
    old_leaf = (pki / "certs" / "db1-postgresql.crt").read_bytes()
    ca_key = (pki / "ca.key").read_bytes()

    later = NOW + 300 * DAY  # the CA has 100 days left (< 180); the leaf 97 (> 30)
    result = site(tmp_path, **short).converge([DB], later)
    assert result["ca"]["changed"]
    assert result["ca"]["reason"] == "expiring"
    assert result["ca"]["serial"] != first["ca"]["serial"]
    assert result["ca"]["not_after"] == _pki.iso(later + 400 * DAY)
    assert result["certificates"]["db1-postgresql"]["changed"] is False
    new_ca = load(pki / "ca.crt")
    assert (pki / "ca.key").read_bytes() == ca_key, "the CA key is kept"
    assert public_der(new_ca) == public_der(old_ca)
    assert new_ca.subject == old_ca.subject
    assert (pki / "certs" / "db1-postgresql.crt").read_bytes() == old_leaf

    # The old leaf verifies against the new CA certificate alone (the hosts get only the new one).
    (tmp_path / "old-leaf.crt").write_bytes(old_leaf)
    for moment in (later + DAY, NOW + 396 * DAY):
        proc = openssl_verify(str(pki / "ca.crt"), str(tmp_path / "old-leaf.crt"), moment)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not site(tmp_path, **short).converge([DB], later)["changed"]


def test_ca_name_change_renews_the_ca_and_reissues(tmp_path):
    site(tmp_path).converge([DB], NOW)
    result = site(tmp_path, ca_common_name="Example Corp internal CA").converge([DB], NOW)
    assert result["ca"]["reason"] == "names-changed"
    assert result["certificates"]["db1-postgresql"]["reason"] == "ca-changed", "the issuer name changed"


def test_a_lost_leaf_key_means_a_new_key(tmp_path):
    pki = tmp_path / "pki"
    site(tmp_path).converge([DB], NOW)
    old = load(pki / "certs" / "db1-postgresql.crt")
    (pki / "private" / "db1-postgresql.key").unlink()
    result = site(tmp_path).converge([DB], NOW)
    assert result["certificates"]["db1-postgresql"]["reason"] == "missing"
    assert public_der(load(pki / "certs" / "db1-postgresql.crt")) != public_der(old)
    # A key that does not belong to the certificate: issued again for the key.
    (pki / "private" / "db1-postgresql.key").write_bytes(_pki.private_key_pem(_pki.generate_key()))
    assert site(tmp_path).converge([DB], NOW)["certificates"]["db1-postgresql"]["reason"] == "key-changed"


def test_check_mode_on_a_new_site_writes_nothing(tmp_path):
    result = site(tmp_path).converge([DB], NOW, check_mode=True)
    assert result["changed"]
    assert result["ca"]["reason"] == "missing"
    assert result["ca"]["serial"] is None
    assert result["certificates"]["db1-postgresql"]["reason"] == "missing"
    assert result["certificates"]["db1-postgresql"]["not_after"] == _pki.iso(NOW + 397 * DAY)
    assert not (tmp_path / "pki").exists()
    diff = "".join(d["before"] + d["after"] for d in result["diff"])
    assert "PRIVATE KEY" not in diff
    assert "BEGIN" not in diff


def test_modes_are_corrected(tmp_path):
    pki = tmp_path / "pki"
    site(tmp_path).converge([DB], NOW)
    (pki / "ca.key").chmod(0o644)
    (pki / "private" / "db1-postgresql.key").chmod(0o640)
    pki.chmod(0o755)
    predicted = site(tmp_path).converge([DB], NOW, check_mode=True)
    assert predicted["changed"]
    assert sorted(predicted["fixed_paths"]) == sorted(
        [str(pki), str(pki / "ca.key"), str(pki / "private" / "db1-postgresql.key")]
    )
    result = site(tmp_path).converge([DB], NOW)
    assert result["changed"]
    assert stat.S_IMODE(os.stat(pki / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pki).st_mode) == 0o700
    assert not site(tmp_path).converge([DB], NOW)["changed"]


def test_encrypted_ca_key(tmp_path):
    pki = tmp_path / "pki"
    site(tmp_path, ca_key_passphrase=OWN_PHRASE).converge([DB], NOW)
    assert b"ENCRYPTED" in (pki / "ca.key").read_bytes()
    assert not site(tmp_path, ca_key_passphrase=OWN_PHRASE).converge([DB], NOW)["changed"]
    with pytest.raises(PkiError, match="is encrypted; give its passphrase"):
        site(tmp_path).converge([DB], NOW)
    with pytest.raises(PkiError, match="cannot be read with the passphrase given"):
        site(tmp_path, ca_key_passphrase=WRONG_PHRASE).converge([DB], NOW)


def make_external_ca(tmp_path, days=3650, ca=True, phrase=None):
    """An organisation's CA: RSA, encrypted key, a chain file with the CA first."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp Issuing CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 30 * DAY)
        .not_valid_after(NOW + days * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "corp-ca.crt", tmp_path / "corp-ca.key"
    cert_path.write_bytes(_pki.certificate_pem(cert))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption((phrase or CORP_PHRASE).encode()),
        )
    )
    return str(cert_path), str(key_path)


@needs_openssl
def test_external_ca(tmp_path):
    cert_path, key_path = make_external_ca(tmp_path)
    kwargs = {"ca_cert_path": cert_path, "ca_key_path": key_path, "ca_key_passphrase": CORP_PHRASE}
    result = site(tmp_path, **kwargs).converge([DB], NOW)
    assert result["ca"] == {
        "cert_path": cert_path,
        "key_path": key_path,
        "not_after": _pki.iso(NOW + 3650 * DAY),
        "serial": result["ca"]["serial"],
        "changed": False,
        "reason": None,
        "external": True,
    }
    leaf = result["certificates"]["db1-postgresql"]
    assert leaf["ca_path"] == cert_path
    assert not (tmp_path / "pki" / "ca.key").exists(), "no CA of its own"
    proc = openssl_verify(cert_path, leaf["cert_path"], NOW + DAY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not site(tmp_path, **kwargs).converge([DB], NOW)["changed"]
    # Switching from the site's own CA to this one re-issues (and back).
    own = site(tmp_path).converge([DB], NOW)
    assert own["certificates"]["db1-postgresql"]["reason"] == "ca-changed"


def test_external_ca_problems(tmp_path):
    cert_path, key_path = make_external_ca(tmp_path)
    with pytest.raises(PkiError, match="cannot be read with the passphrase given"):
        site(tmp_path, ca_cert_path=cert_path, ca_key_path=key_path, ca_key_passphrase=WRONG_PHRASE).converge([], NOW)
    with pytest.raises(PkiError, match="go together"):
        site(tmp_path, ca_cert_path=cert_path)
    (tmp_path / "other").mkdir()
    other_cert, _other_key = make_external_ca(tmp_path / "other", phrase=OWN_PHRASE)
    with pytest.raises(PkiError, match="does not belong to the certificate"):
        site(tmp_path, ca_cert_path=other_cert, ca_key_path=key_path, ca_key_passphrase=CORP_PHRASE).converge([], NOW)
    not_ca = tmp_path / "notca"
    not_ca.mkdir()
    cert_path, key_path = make_external_ca(not_ca, ca=False)
    with pytest.raises(PkiError, match="is not a CA certificate"):
        site(tmp_path, ca_cert_path=cert_path, ca_key_path=key_path, ca_key_passphrase=CORP_PHRASE).converge([], NOW)
    soon = tmp_path / "soon"
    soon.mkdir()
    cert_path, key_path = make_external_ca(soon, days=20)
    pki = site(tmp_path, ca_cert_path=cert_path, ca_key_path=key_path, ca_key_passphrase=CORP_PHRASE)
    pki.converge([DB], NOW)
    assert "does not renew a CA it did not create" in pki.warnings[0]
    with pytest.raises(PkiError, match="expired on"):
        site(tmp_path, ca_cert_path=cert_path, ca_key_path=key_path, ca_key_passphrase=CORP_PHRASE).converge(
            [DB], NOW + 21 * DAY
        )


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 129, "sp ace", None])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(PkiError, match="is not a safe file name"):
        site(tmp_path).converge([{"name": name}], NOW)
    assert not (tmp_path / "pki").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key_usage": ["digitalSignature", "keyEncipherment"]}, "key usage keyEncipherment is refused"),
        ({"key_usage": ["keyCertSign"]}, "only a CA signs certificates"),
        ({"key_usage": ["flying"]}, "unknown key usage 'flying'"),
        ({"key_usage": []}, "key_usage must not be empty"),
        ({"extended_key_usage": ["webAuth"]}, "unknown extended key usage 'webAuth'"),
        ({"subject_alt_names": ["db1.example.net"]}, "must be 'DNS:name' or 'IP:address'"),
        ({"subject_alt_names": ["IP:10.0.0.300"]}, "is not an IP address"),
        ({"subject_alt_names": ["DNS:bad_host!"]}, "is not a DNS name"),
        ({"subject_alt_names": ["email:a@example.net"]}, "only DNS: and IP: names are supported"),
        ({"validity_days": 30}, "must be larger than renew_days"),
        ({"common_name": "x" * 65}, "longer than 64 characters"),
    ],
)
def test_bad_requests_are_refused_naming_the_certificate(tmp_path, change, message):
    with pytest.raises(PkiError, match=r"^certificate db1-postgresql: ") as info:
        site(tmp_path).converge([{**DB, **change}], NOW)
    assert message in str(info.value)


def test_the_same_name_twice(tmp_path):
    result = site(tmp_path).converge([DB, dict(DB)], NOW)
    assert list(result["certificates"]) == ["db1-postgresql"]
    with pytest.raises(PkiError, match="requested twice with different settings"):
        site(tmp_path).converge([DB, {**DB, "common_name": "other"}], NOW)


def test_site_settings_are_checked(tmp_path):
    with pytest.raises(PkiError, match="absolute"):
        Site("relative/pki")
    with pytest.raises(PkiError, match=r"ca.validity_days \(100\) must be larger than ca.renew_days \(180\)"):
        site(tmp_path, ca_validity_days=100)
    with pytest.raises(PkiError, match="ca.curve"):
        site(tmp_path, ca_curve="secp521r1")
    with pytest.raises(PkiError, match="aware datetime"):
        site(tmp_path).converge([], datetime.datetime(2031, 1, 1))  # naive on purpose


def test_normalize_san():
    assert _pki.normalize_san("DNS:Db1.Example.NET.", "x") == "DNS:db1.example.net"
    assert _pki.normalize_san("dns:*.example.net", "x") == "DNS:*.example.net"
    assert _pki.normalize_san("IP:2001:DB8:0::11", "x") == "IP:2001:db8::11"
    assert _pki.normalize_san(" IP : 10.0.0.1", "x") == "IP:10.0.0.1"
