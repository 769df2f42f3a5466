# Copyright: apes.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The site PKI behind apes.infra.pki_certificates: one CA per site directory, and leaf
certificates issued or renewed only when they need it.

Everything that depends on time takes ``now`` (an aware UTC datetime) as an argument, so tests
pass a fixed moment and never depend on today's date. Runs on the controller, where ansible-core
brings the cryptography library.

Layout of a site directory (all created mode 0700, keys 0600, certificates 0644):

    <dir>/ca.crt  <dir>/ca.key  <dir>/certs/<name>.crt  <dir>/private/<name>.key
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import re
import stat
import tempfile
import traceback

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    from cryptography.x509.oid import NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

UTC = datetime.UTC  # the controller runs Python 3.11 or later (ansible-core 2.19)
DEFAULT_CA_COMMON_NAME = "apes.infra development CA"
DEFAULT_CA_VALIDITY_DAYS = 3650
DEFAULT_CA_RENEW_DAYS = 180
DEFAULT_CA_CURVE = "secp384r1"
DEFAULT_VALIDITY_DAYS = 397
DEFAULT_RENEW_DAYS = 30
DEFAULT_KEY_USAGE = ("digitalSignature",)
DEFAULT_EXTENDED_KEY_USAGE = ("serverAuth",)
CURVES = ("secp256r1", "secp384r1")
# A certificate's validity starts this long before it is issued, for hosts whose clocks lag.
BACKDATE = datetime.timedelta(minutes=5)

REASON_MISSING = "missing"
REASON_EXPIRING = "expiring"
REASON_CA_CHANGED = "ca-changed"
REASON_NAMES_CHANGED = "names-changed"
REASON_USAGE_CHANGED = "usage-changed"
REASON_KEY_CHANGED = "key-changed"

# Key usages a leaf with an ECC key can carry, by their RFC 5280 names (cryptography's attribute).
LEAF_KEY_USAGES = {
    "digitalSignature": "digital_signature",
    "nonRepudiation": "content_commitment",
    "keyAgreement": "key_agreement",
}
KEY_USAGE_ALIASES = {"contentCommitment": "nonRepudiation"}
REFUSED_KEY_USAGES = {
    "keyEncipherment": "it is for RSA key transport; leaf keys are ECC P-256, which TLS uses with digitalSignature",
    "dataEncipherment": "it is for RSA keys; leaf keys are ECC P-256",
    "keyCertSign": "only a CA signs certificates",
    "cRLSign": "only a CA signs revocation lists",
    "encipherOnly": "it is not used by TLS",
    "decipherOnly": "it is not used by TLS",
}
ALL_KEY_USAGES = {
    "digital_signature": "digitalSignature",
    "content_commitment": "nonRepudiation",
    "key_encipherment": "keyEncipherment",
    "data_encipherment": "dataEncipherment",
    "key_agreement": "keyAgreement",
    "key_cert_sign": "keyCertSign",
    "crl_sign": "cRLSign",
}
EXTENDED_KEY_USAGES = {
    "serverAuth": "1.3.6.1.5.5.7.3.1",
    "clientAuth": "1.3.6.1.5.5.7.3.2",
    "codeSigning": "1.3.6.1.5.5.7.3.3",
    "emailProtection": "1.3.6.1.5.5.7.3.4",
    "timeStamping": "1.3.6.1.5.5.7.3.8",
    "OCSPSigning": "1.3.6.1.5.5.7.3.9",
}
EKU_NAMES = {oid: name for name, oid in EXTENDED_KEY_USAGES.items()}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DNS_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_OID = re.compile(r"^[0-2](\.[0-9]+)+$")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.S)


class PkiError(Exception):
    """Input or files the PKI refuses, with a message that says what to do."""


class Request:
    """One certificate wanted, normalized so that two spellings of the same request compare equal."""

    def __init__(self, name, common_name, subject_alt_names, key_usage, extended_key_usage, validity_days):
        self.name = name
        self.common_name = common_name
        self.subject_alt_names = subject_alt_names  # tuple, request order, no duplicates
        self.key_usage = key_usage  # sorted tuple of RFC 5280 names
        self.extended_key_usage = extended_key_usage  # sorted tuple of names or dotted OIDs
        self.validity_days = validity_days

    def key(self):
        return (
            self.common_name,
            frozenset(self.subject_alt_names),
            self.key_usage,
            self.extended_key_usage,
            self.validity_days,
        )


# --- parsing of requests --------------------------------------------------------------------


def check_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise PkiError(
            f"certificate name {name!r} is not a safe file name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 128 characters"
        )
    return name


def normalize_san(value, where):
    if not isinstance(value, str) or ":" not in value:
        raise PkiError(f"{where}: subject alternative name {value!r} must be 'DNS:name' or 'IP:address'")
    kind, _sep, rest = value.partition(":")
    kind, rest = kind.strip().upper(), rest.strip()
    if kind == "IP":
        try:
            return "IP:" + str(ipaddress.ip_address(rest))
        except ValueError:
            raise PkiError(f"{where}: {value!r} is not an IP address") from None
    if kind == "DNS":
        name = rest.lower().rstrip(".")
        labels = name.split(".")
        if labels and labels[0] == "*":
            labels = labels[1:]
        if not name or len(name) > 253 or not labels or not all(_DNS_LABEL.match(label) for label in labels):
            raise PkiError(f"{where}: {value!r} is not a DNS name (ASCII labels, an optional leading '*.')")
        return "DNS:" + name
    raise PkiError(f"{where}: subject alternative name {value!r}: only DNS: and IP: names are supported")


def normalize_key_usage(values, where):
    out = set()
    for given in values:
        value = KEY_USAGE_ALIASES.get(given, given)
        if value in REFUSED_KEY_USAGES:
            raise PkiError(f"{where}: key usage {value} is refused: {REFUSED_KEY_USAGES[value]}")
        if value not in LEAF_KEY_USAGES:
            raise PkiError(f"{where}: unknown key usage {value!r}; choose from {', '.join(sorted(LEAF_KEY_USAGES))}")
        out.add(value)
    if not out:
        raise PkiError(f"{where}: key_usage must not be empty (TLS needs digitalSignature)")
    return tuple(sorted(out))


def normalize_extended_key_usage(values, where):
    out = set()
    for value in values:
        if value in EXTENDED_KEY_USAGES:
            out.add(value)
        elif isinstance(value, str) and _OID.match(value):
            out.add(EKU_NAMES.get(value, value))
        else:
            raise PkiError(
                f"{where}: unknown extended key usage {value!r}; choose from "
                f"{', '.join(sorted(EXTENDED_KEY_USAGES))} or give a dotted OID"
            )
    return tuple(sorted(out))


def parse_request(raw, renew_days=DEFAULT_RENEW_DAYS):
    """A certificate request (the module's suboptions, missing keys take their defaults) as a Request."""
    name = check_name(raw.get("name"))
    where = f"certificate {name}"
    common_name = raw.get("common_name") or name
    if len(common_name) > 64:
        raise PkiError(f"{where}: common_name {common_name!r} is longer than 64 characters (RFC 5280)")
    sans = []
    for value in raw.get("subject_alt_names") or []:
        san = normalize_san(value, where)
        if san not in sans:
            sans.append(san)
    key_usage = raw.get("key_usage")
    extended = raw.get("extended_key_usage")
    validity_days = raw.get("validity_days") or DEFAULT_VALIDITY_DAYS
    if validity_days <= renew_days:
        raise PkiError(
            f"{where}: validity_days ({validity_days}) must be larger than renew_days ({renew_days}), "
            "or the certificate would be renewed at every run"
        )
    return Request(
        name,
        common_name,
        tuple(sans),
        normalize_key_usage(DEFAULT_KEY_USAGE if key_usage is None else key_usage, where),
        normalize_extended_key_usage(DEFAULT_EXTENDED_KEY_USAGE if extended is None else extended, where),
        validity_days,
    )


def parse_requests(raws, renew_days=DEFAULT_RENEW_DAYS):
    """Requests by name, in first-seen order. The same name twice is fine when both ask the same."""
    requests = {}
    for raw in raws:
        request = parse_request(raw, renew_days)
        other = requests.get(request.name)
        if other is not None and other.key() != request.key():
            raise PkiError(
                f"certificate {request.name} is requested twice with different settings; give each certificate "
                "its own name (for example prefixed with the host)"
            )
        requests.setdefault(request.name, request)
    return list(requests.values())


# --- reading certificates and keys ----------------------------------------------------------


def not_after(cert):
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=UTC)


def iso(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def serial_hex(cert):
    return format(cert.serial_number, "X")


def load_certificate(data, path):
    """The first certificate of a PEM file (a CA file may carry its chain after it)."""
    match = _PEM_CERT.search(data)
    if not match:
        raise PkiError(f"{path} holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificate(match.group(0))
    except ValueError as exc:
        raise PkiError(f"{path} is not a readable certificate: {exc}") from None


def load_private_key(data, path, passphrase=None):
    try:
        return serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError as exc:
        if passphrase:
            raise PkiError(f"{path} is not encrypted, but a passphrase was given; give none for it") from None
        raise PkiError(f"{path} is encrypted; give its passphrase (ca_key_passphrase)") from exc
    except ValueError:
        if passphrase:
            raise PkiError(
                f"{path} cannot be read with the passphrase given (wrong passphrase, or not a key)"
            ) from None
        raise PkiError(f"{path} is not a readable PEM private key") from None


def _public_der(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_public_key(cert, private_key):
    return _public_der(cert.public_key()) == _public_der(private_key.public_key())


def signed_by(cert, ca_cert):
    """Whether ca_cert's key signed cert (issuer name and signature), without needing cryptography >= 40."""
    if cert.issuer != ca_cert.subject:
        return False
    public = ca_cert.public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def common_name_of(cert):
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return values[0].value if values else None


def _extension(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def subject_alt_names_of(cert):
    ext = _extension(cert, x509.SubjectAlternativeName)
    if ext is None:
        return ()
    names = [f"DNS:{value.lower()}" for value in ext.get_values_for_type(x509.DNSName)]
    names += [f"IP:{value}" for value in ext.get_values_for_type(x509.IPAddress)]
    return tuple(names)


def key_usage_of(cert):
    ext = _extension(cert, x509.KeyUsage)
    if ext is None:
        return ()
    return tuple(sorted(name for attr, name in ALL_KEY_USAGES.items() if getattr(ext, attr)))


def extended_key_usage_of(cert):
    ext = _extension(cert, x509.ExtendedKeyUsage)
    if ext is None:
        return ()
    return tuple(sorted(EKU_NAMES.get(oid.dotted_string, oid.dotted_string) for oid in ext))


def is_ca(cert):
    ext = _extension(cert, x509.BasicConstraints)
    return bool(ext and ext.ca)


# --- decisions ------------------------------------------------------------------------------


def leaf_reason(cert, key, request, ca_cert, renew_days, now):
    """Why the leaf must be (re)issued, or None when it is fine as it is."""
    if cert is None or key is None:
        return REASON_MISSING
    if not same_public_key(cert, key):
        return REASON_KEY_CHANGED
    if not signed_by(cert, ca_cert):
        return REASON_CA_CHANGED
    if common_name_of(cert) != request.common_name or set(subject_alt_names_of(cert)) != set(request.subject_alt_names):
        return REASON_NAMES_CHANGED
    if key_usage_of(cert) != request.key_usage or extended_key_usage_of(cert) != request.extended_key_usage:
        return REASON_USAGE_CHANGED
    if not_after(cert) - now < datetime.timedelta(days=renew_days):
        return REASON_EXPIRING
    return None


def ca_reason(cert, key, common_name, renew_days, now):
    """Why the CA certificate must be (re)made from its key, or None."""
    if cert is None or key is None:
        return REASON_MISSING
    if not same_public_key(cert, key):
        return REASON_KEY_CHANGED
    if common_name_of(cert) != common_name:
        return REASON_NAMES_CHANGED
    if not_after(cert) - now < datetime.timedelta(days=renew_days):
        return REASON_EXPIRING
    return None


# --- building -------------------------------------------------------------------------------


def generate_key(curve="secp256r1"):
    return ec.generate_private_key({"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}[curve])


def _hash_for(key):
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {384: hashes.SHA384(), 521: hashes.SHA512()}.get(key.curve.key_size, hashes.SHA256())
    return hashes.SHA256()


def _key_usage(**flags):
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


def build_ca_certificate(key, common_name, validity_days, now):
    """A self-signed CA certificate for key. The same key and name give certificates that sign alike,
    so a renewed CA certificate verifies every leaf the previous one did."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )
    return builder.sign(key, _hash_for(key))


def _general_name(san):
    kind, _sep, value = san.partition(":")
    if kind == "IP":
        return x509.IPAddress(ipaddress.ip_address(value))
    return x509.DNSName(value)


def build_leaf_certificate(request, key, ca_cert, ca_key, now):
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, request.common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=request.validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(**{LEAF_KEY_USAGES[k]: True for k in request.key_usage}), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
    )
    if request.extended_key_usage:
        oids = [x509.ObjectIdentifier(EXTENDED_KEY_USAGES.get(u, u)) for u in request.extended_key_usage]
        builder = builder.add_extension(x509.ExtendedKeyUsage(oids), critical=False)
    if request.subject_alt_names:
        names = [_general_name(san) for san in request.subject_alt_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, _hash_for(ca_key))


def certificate_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key, passphrase=None):
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


# --- the site directory ---------------------------------------------------------------------


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def write_file(path, data, mode):
    """Write data to path atomically (temporary file in the same directory, fsync, rename), with mode."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _describe(common_name, sans, key_usage, eku, expires=None, reason=None):
    lines = [f"common_name: {common_name}", f"subject_alt_names: {', '.join(sans)}"]
    lines += [f"key_usage: {', '.join(key_usage)}", f"extended_key_usage: {', '.join(eku)}"]
    if expires is not None:
        lines.append(f"not_after: {iso(expires)}")
    if reason is not None:
        lines.append(f"issued because: {reason}")
    return "\n".join(lines) + "\n"


class Site:
    """One site directory and its CA. converge() does the work; check_mode computes the same in memory."""

    def __init__(
        self,
        directory,
        ca_common_name=DEFAULT_CA_COMMON_NAME,
        ca_validity_days=DEFAULT_CA_VALIDITY_DAYS,
        ca_renew_days=DEFAULT_CA_RENEW_DAYS,
        ca_curve=DEFAULT_CA_CURVE,
        ca_cert_path=None,
        ca_key_path=None,
        ca_key_passphrase=None,
        renew_days=DEFAULT_RENEW_DAYS,
    ):
        if not HAS_CRYPTOGRAPHY:
            raise PkiError("the Python library cryptography is required on the controller")
        if not os.path.isabs(directory):
            raise PkiError(f"dir must be an absolute path, got {directory!r}")
        if ca_curve not in CURVES:
            raise PkiError(f"ca.curve must be one of {', '.join(CURVES)}, got {ca_curve!r}")
        if ca_validity_days <= ca_renew_days:
            raise PkiError(
                f"ca.validity_days ({ca_validity_days}) must be larger than ca.renew_days ({ca_renew_days}), "
                "or the CA would be renewed at every run"
            )
        if renew_days < 0 or ca_renew_days < 0:
            raise PkiError("renew_days and ca.renew_days must not be negative")
        if bool(ca_cert_path) != bool(ca_key_path):
            raise PkiError("ca_cert_path and ca_key_path go together: give both to sign with your own CA, or neither")
        self.directory = os.path.normpath(directory)
        self.ca_common_name = ca_common_name
        self.ca_validity_days = ca_validity_days
        self.ca_renew_days = ca_renew_days
        self.ca_curve = ca_curve
        self.external = bool(ca_cert_path)
        self.ca_cert_path = ca_cert_path or os.path.join(self.directory, "ca.crt")
        self.ca_key_path = ca_key_path or os.path.join(self.directory, "ca.key")
        self.passphrase = ca_key_passphrase or None
        self.renew_days = renew_days
        self.warnings = []
        self.fixed_paths = []

    def cert_path(self, name):
        return os.path.join(self.directory, "certs", f"{name}.crt")

    def key_path(self, name):
        return os.path.join(self.directory, "private", f"{name}.key")

    # -- CA

    def _external_ca(self, now):
        cert_data, key_data = _read(self.ca_cert_path), _read(self.ca_key_path)
        if cert_data is None:
            raise PkiError(f"ca_cert_path {self.ca_cert_path} does not exist")
        if key_data is None:
            raise PkiError(f"ca_key_path {self.ca_key_path} does not exist")
        cert = load_certificate(cert_data, self.ca_cert_path)
        key = load_private_key(key_data, self.ca_key_path, self.passphrase)
        if not same_public_key(cert, key):
            raise PkiError(f"the key {self.ca_key_path} does not belong to the certificate {self.ca_cert_path}")
        if not is_ca(cert):
            raise PkiError(f"{self.ca_cert_path} is not a CA certificate (no basicConstraints CA:TRUE)")
        if not_after(cert) <= now:
            raise PkiError(f"the CA certificate {self.ca_cert_path} expired on {iso(not_after(cert))}; replace it")
        if not_after(cert) - now < datetime.timedelta(days=self.ca_renew_days):
            self.warnings.append(
                f"the CA certificate {self.ca_cert_path} expires on {iso(not_after(cert))}: renew it (with the same "
                "key, so that the certificates it signed keep verifying); this module does not renew a CA it did "
                "not create"
            )
        return {"cert": cert, "key": key, "reason": None, "new_key": False, "cert_pem": None, "key_pem": None}

    def _own_ca(self, now):
        cert_data, key_data = _read(self.ca_cert_path), _read(self.ca_key_path)
        key = load_private_key(key_data, self.ca_key_path, self.passphrase) if key_data is not None else None
        cert = load_certificate(cert_data, self.ca_cert_path) if cert_data is not None else None
        new_key = key is None
        if new_key:
            key = generate_key(self.ca_curve)
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name != self.ca_curve:
            self.warnings.append(
                f"the CA key {self.ca_key_path} uses {key.curve.name}, not ca.curve {self.ca_curve}: it is kept, "
                "since a new CA key would invalidate every certificate it signed"
            )
        reason = REASON_MISSING if new_key else ca_reason(cert, key, self.ca_common_name, self.ca_renew_days, now)
        state = {"cert": cert, "key": key, "reason": reason, "new_key": new_key, "cert_pem": None, "key_pem": None}
        state["old_cert"] = cert
        if reason is not None:
            state["cert"] = build_ca_certificate(key, self.ca_common_name, self.ca_validity_days, now)
            state["cert_pem"] = certificate_pem(state["cert"])
            if new_key:
                state["key_pem"] = private_key_pem(key, self.passphrase)
        return state

    # -- leaves

    def _leaf(self, request, ca, now):
        cert_data, key_data = _read(self.cert_path(request.name)), _read(self.key_path(request.name))
        key = None
        if key_data is not None:
            try:
                key = load_private_key(key_data, self.key_path(request.name))
            except PkiError as exc:
                raise PkiError(
                    f"{exc}; remove it to have a new key made (the certificate is then issued again)"
                ) from None
        cert = None
        if cert_data is not None:
            try:
                cert = load_certificate(cert_data, self.cert_path(request.name))
            except PkiError:
                cert = None  # unreadable: issued again
        reason = leaf_reason(cert, key, request, ca["cert"], self.renew_days, now)
        if reason is None and ca["new_key"]:
            reason = REASON_CA_CHANGED
        state = {"request": request, "cert": cert, "reason": reason, "new_key": key is None, "key_pem": None}
        if reason is not None:
            if key is None:
                key = generate_key("secp256r1")
                state["key_pem"] = private_key_pem(key)
            state["new_cert"] = build_leaf_certificate(request, key, ca["cert"], ca["key"], now)
        return state

    # -- files

    def _ensure_dirs(self):
        for path in (self.directory, os.path.join(self.directory, "certs"), os.path.join(self.directory, "private")):
            if not os.path.isdir(path):
                os.makedirs(path, 0o700, exist_ok=True)
            self._fix_mode(path, 0o700)

    def _fix_mode(self, path, mode):
        if os.path.exists(path) and stat.S_IMODE(os.stat(path).st_mode) != mode:
            os.chmod(path, mode)
            self.fixed_paths.append(path)

    @contextlib.contextmanager
    def _lock(self):
        fd = os.open(os.path.join(self.directory, ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _wrong_modes(self, names):
        """Paths whose mode the real run would fix (check mode)."""
        wanted = [(self.directory, 0o700), (os.path.join(self.directory, "certs"), 0o700)]
        wanted.append((os.path.join(self.directory, "private"), 0o700))
        if not self.external:
            wanted += [(self.ca_key_path, 0o600), (self.ca_cert_path, 0o644)]
        for name in names:
            wanted += [(self.key_path(name), 0o600), (self.cert_path(name), 0o644)]
        return [p for p, m in wanted if os.path.exists(p) and stat.S_IMODE(os.stat(p).st_mode) != m]

    def converge(self, raw_requests, now, check_mode=False):
        """Issue or renew what needs it; return the module's result (without 'warnings')."""
        if now.tzinfo is None:
            raise PkiError("now must be an aware datetime (UTC)")
        requests = parse_requests(raw_requests, self.renew_days)
        if check_mode:
            return self._converge(requests, now, check_mode)
        self._ensure_dirs()
        with self._lock():
            return self._converge(requests, now, check_mode)

    def _converge(self, requests, now, check_mode):
        ca = self._external_ca(now) if self.external else self._own_ca(now)
        leaves = [self._leaf(request, ca, now) for request in requests]

        if check_mode:
            self.fixed_paths = self._wrong_modes([r.name for r in requests])
        else:
            if ca["key_pem"] is not None:
                write_file(self.ca_key_path, ca["key_pem"], 0o600)
            if ca["cert_pem"] is not None:
                write_file(self.ca_cert_path, ca["cert_pem"], 0o644)
            if not self.external:
                self._fix_mode(self.ca_key_path, 0o600)
                self._fix_mode(self.ca_cert_path, 0o644)
            for leaf in leaves:
                name = leaf["request"].name
                if leaf["key_pem"] is not None:
                    write_file(self.key_path(name), leaf["key_pem"], 0o600)
                if leaf["reason"] is not None:
                    write_file(self.cert_path(name), certificate_pem(leaf["new_cert"]), 0o644)
                self._fix_mode(self.key_path(name), 0o600)
                self._fix_mode(self.cert_path(name), 0o644)

        ca_changed = ca["reason"] is not None
        result = {
            "ca": {
                "cert_path": self.ca_cert_path,
                "key_path": self.ca_key_path,
                "not_after": iso(not_after(ca["cert"])),
                "serial": None if (check_mode and ca_changed) else serial_hex(ca["cert"]),
                "changed": ca_changed,
                "reason": ca["reason"],
                "external": self.external,
            },
            "certificates": {},
            "diff": [],
        }
        if ca_changed:
            old = ca.get("old_cert")
            result["diff"].append(
                {
                    "before_header": f"CA {self.ca_cert_path}",
                    "after_header": f"CA {self.ca_cert_path}",
                    "before": "" if old is None else f"common_name: {common_name_of(old)}\n",
                    "after": f"common_name: {self.ca_common_name}\nnot_after: {iso(not_after(ca['cert']))}\n"
                    f"key: {'new' if ca['new_key'] else 'kept'}\nissued because: {ca['reason']}\n",
                }
            )
        for leaf in leaves:
            request, reason = leaf["request"], leaf["reason"]
            cert = leaf["new_cert"] if reason is not None else leaf["cert"]
            result["certificates"][request.name] = {
                "cert_path": self.cert_path(request.name),
                "key_path": self.key_path(request.name),
                "ca_path": self.ca_cert_path,
                "not_after": iso(not_after(cert)),
                "serial": None if (check_mode and reason is not None) else serial_hex(cert),
                "changed": reason is not None,
                "reason": reason,
            }
            if reason is not None:
                old = leaf["cert"]
                before = ""
                if old is not None:
                    before = _describe(
                        common_name_of(old),
                        subject_alt_names_of(old),
                        key_usage_of(old),
                        extended_key_usage_of(old),
                        not_after(old),
                    )
                after = _describe(
                    request.common_name,
                    request.subject_alt_names,
                    request.key_usage,
                    request.extended_key_usage,
                    not_after(cert),
                    reason,
                )
                header = f"certificate {request.name}"
                result["diff"].append(
                    {"before_header": header, "after_header": header, "before": before, "after": after}
                )
        result["fixed_paths"] = list(self.fixed_paths)
        result["changed"] = (
            ca_changed or any(c["changed"] for c in result["certificates"].values()) or bool(self.fixed_paths)
        )
        return result
