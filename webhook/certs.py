"""TLS certificates for the webhook: a small CA and a serving certificate (`cryptography`).

Why: the apiserver only calls webhooks over TLS with a CA it was given (`caBundle`). We make
the CA and the serving certificate ourselves (for `kaito webhook serve` and the in-cluster
bootstrap), renew the serving one before it expires, and keep the CA so `caBundle` stays put.
Must not: talk to Kubernetes, read the clock (callers pass `now`), or write files except
in `ensure_cert_dir`, which replaces each file atomically.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALID_FOR = dt.timedelta(days=3650)
CERT_VALID_FOR = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)
_BACKDATE = dt.timedelta(minutes=5)


class CertificateError(ValueError):
    """A certificate or key that cannot be read or does not belong together."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """PEM-encoded certificate and its private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return _load_cert(self.cert_pem)


def build_ca(
    *,
    now: dt.datetime,
    valid_for: dt.timedelta = CA_VALID_FOR,
    common_name: str = "kaito-webhook-ca",
) -> KeyPair:
    """A self-signed CA that may sign serving certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        _base_builder(name, name, key.public_key(), now, valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    return KeyPair(_cert_pem(cert), _key_pem(key))


def build_certificate(
    hosts: Sequence[str],
    *,
    ca: KeyPair,
    now: dt.datetime,
    valid_for: dt.timedelta = CERT_VALID_FOR,
) -> KeyPair:
    """A serving certificate for `hosts` (DNS names or IP addresses), signed by `ca`."""
    if not hosts:
        raise CertificateError("a serving certificate needs at least one DNS name or IP address")
    ca_cert = ca.cert
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the CA key must be an elliptic-curve key made by build_ca")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    builder = (
        _base_builder(subject, ca_cert.subject, key.public_key(), now, valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    return KeyPair(_cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key))


def renewal_reason(
    pair: KeyPair,
    *,
    ca_pem: bytes,
    hosts: Sequence[str],
    now: dt.datetime,
    renew_before: dt.timedelta = RENEW_BEFORE,
) -> str | None:
    """Why `pair` must be replaced (unreadable, wrong CA, key, hosts or near expiry), else None."""
    try:
        cert, ca_cert = _load_cert(pair.cert_pem), _load_cert(ca_pem)
        key = serialization.load_pem_private_key(pair.key_pem, password=None)
    except (ValueError, TypeError, CertificateError) as exc:
        return f"unreadable certificate or key: {exc}"
    if cert.issuer != ca_cert.subject:
        return "not issued by the CA"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "signature does not verify with the CA"
    if key.public_key() != cert.public_key():
        return "private key does not match the certificate"
    if cert.not_valid_after_utc - renew_before <= now:
        return f"expires at {cert.not_valid_after_utc.isoformat()}"
    missing = set(hosts) - set(certificate_hosts(cert))
    if missing:
        return f"does not cover {', '.join(sorted(missing))}"
    return None


def certificate_hosts(cert: x509.Certificate) -> list[str]:
    """DNS names and IP addresses in the certificate's subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return list(san.get_values_for_type(x509.DNSName)) + ips


def ensure_cert_dir(
    cert_dir: Path,
    hosts: Sequence[str],
    *,
    now: dt.datetime,
    valid_for: dt.timedelta = CERT_VALID_FOR,
    renew_before: dt.timedelta = RENEW_BEFORE,
) -> str:
    """Make sure `cert_dir` holds ca.crt/ca.key/tls.crt/tls.key valid for `hosts`.

    Returns "kept", "created" or "renewed". An existing tls.crt/tls.key without our
    ca.key (brought by someone else) is kept as it is. The CA is reused when present.
    """
    crt, key, ca_crt, ca_key = (cert_dir / n for n in ("tls.crt", "tls.key", "ca.crt", "ca.key"))
    have_serving = crt.is_file() and key.is_file()
    if have_serving and not ca_key.is_file():
        return "kept"
    if ca_crt.is_file() and ca_key.is_file():
        ca = KeyPair(ca_crt.read_bytes(), ca_key.read_bytes())
        if renewal_reason(ca, ca_pem=ca.cert_pem, hosts=[], now=now, renew_before=valid_for):
            ca = build_ca(now=now)
    else:
        ca = build_ca(now=now)
    if have_serving:
        current = KeyPair(crt.read_bytes(), key.read_bytes())
        if not renewal_reason(
            current, ca_pem=ca.cert_pem, hosts=hosts, now=now, renew_before=renew_before
        ):
            return "kept"
    pair = build_certificate(hosts, ca=ca, now=now, valid_for=valid_for)
    cert_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(ca_key, ca.key_pem, private=True)
    _write_atomic(ca_crt, ca.cert_pem, private=False)
    # Key first: a reader that sees the new key with the old certificate fails to load the
    # pair and keeps its previous context until the certificate lands a moment later.
    _write_atomic(key, pair.key_pem, private=True)
    _write_atomic(crt, pair.cert_pem, private=False)
    return "renewed" if have_serving else "created"


def _write_atomic(path: Path, data: bytes, *, private: bool) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".")
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _base_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    valid_for: dt.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + valid_for)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from exc


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
