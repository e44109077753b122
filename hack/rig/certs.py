"""Certificates for the local control plane, made with `cryptography` (no openssl calls).

Why: kube-apiserver serves TLS only and authenticates clients by certificate; the rig
needs a CA, a serving cert with the SANs in-cluster clients use, an admin client cert in
`system:masters`, and an RSA key pair that signs service-account tokens.

It must not: write outside the directory it is given, reuse keys across state dirs, or
make certificates valid for any address other than loopback, the in-cluster names and
the rig's own control-plane address (a bridge it made, see rig.hostnet).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVING_IPS = ("127.0.0.1", "10.0.0.1")
SERVING_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local")
VALID_FOR = datetime.timedelta(days=365)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertPaths:
    """Where each PEM file of one control plane lives."""

    ca_crt: Path
    ca_key: Path
    serving_crt: Path
    serving_key: Path
    admin_crt: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path

    @classmethod
    def under(cls, d: Path) -> CertPaths:
        return cls(ca_crt=d / "ca.crt", ca_key=d / "ca.key", serving_crt=d / "apiserver.crt",
                   serving_key=d / "apiserver.key", admin_crt=d / "admin.crt",
                   admin_key=d / "admin.key", sa_key=d / "sa.key", sa_pub=d / "sa.pub")


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID_FOR))


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, subject: x509.Name,
          usage: x509.ObjectIdentifier, now: datetime.datetime,
          sans: list[x509.GeneralName] | None = None) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (_builder(subject, ca_name, key.public_key(), now)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_certificates(directory: Path, *, now: datetime.datetime | None = None,
                      extra_ips: tuple[str, ...] = ()) -> CertPaths:
    """Create a fresh CA, serving cert, admin cert and service-account key pair.

    extra_ips: more serving-cert SANs (the apiserver's pod-reachable address).
    """
    now = now or datetime.datetime.now(datetime.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertPaths.under(directory)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kaito-py-local-ca")
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), now)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                       content_commitment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip))
                                    for ip in (*SERVING_IPS, *extra_ips)]
    sans += [x509.DNSName(n) for n in SERVING_DNS]
    serving = _leaf(ca_key, ca_name, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH,
                    now, sans)
    admin = _leaf(ca_key, ca_name, _name("kaito-py-admin", "system:masters"),
                  ExtendedKeyUsageOID.CLIENT_AUTH, now)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        paths.ca_crt: ca.public_bytes(serialization.Encoding.PEM), paths.ca_key: _key_pem(ca_key),
        paths.serving_crt: serving[0], paths.serving_key: serving[1],
        paths.admin_crt: admin[0], paths.admin_key: admin[1], paths.sa_key: _key_pem(sa),
        paths.sa_pub: sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for path, data in files.items():
        path.write_bytes(data)
        if path.name.endswith(".key"):
            path.chmod(0o600)
    return paths


def client_certificate(paths: CertPaths, cn: str, org: str, crt: Path, key: Path) -> None:
    """A client cert signed by the control plane's CA (e.g. system:node:NAME in system:nodes)."""
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{paths.ca_key} is not the EC key make_certificates writes")
    ca_name = x509.load_pem_x509_certificate(paths.ca_crt.read_bytes()).subject
    cert, key_pem = _leaf(ca_key, ca_name, _name(cn, org), ExtendedKeyUsageOID.CLIENT_AUTH,
                          datetime.datetime.now(datetime.UTC))
    crt.parent.mkdir(parents=True, exist_ok=True)
    crt.write_bytes(cert)
    key.write_bytes(key_pem)
    key.chmod(0o600)
