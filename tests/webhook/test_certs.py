"""Certificates: SANs, renewal decisions and the cert dir, with an explicit clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from webhook.certs import (
    CertificateError,
    build_ca,
    build_certificate,
    certificate_hosts,
    ensure_cert_dir,
    renewal_reason,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_a_serving_certificate_carries_dns_and_ip_sans_and_verifies_with_its_ca() -> None:
    ca = build_ca(now=NOW)
    pair = build_certificate(["webhook.kaito-system.svc", "127.0.0.1"], ca=ca, now=NOW)
    assert certificate_hosts(pair.cert) == ["webhook.kaito-system.svc", "127.0.0.1"]
    pair.cert.verify_directly_issued_by(ca.cert)
    assert pair.cert.not_valid_after_utc == NOW + dt.timedelta(days=365)
    assert renewal_reason(pair, ca_pem=ca.cert_pem, hosts=["127.0.0.1"], now=NOW) is None


def test_no_hosts_is_an_error() -> None:
    with pytest.raises(CertificateError, match="at least one"):
        build_certificate([], ca=build_ca(now=NOW), now=NOW)


@pytest.mark.parametrize(
    ("days_later", "hosts", "expected"),
    [
        pytest.param(300, ["a.svc"], None, id="fresh"),
        pytest.param(340, ["a.svc"], "expires at", id="within-30-days-of-expiry"),
        pytest.param(0, ["b.svc"], "does not cover b.svc", id="missing-host"),
    ],
)
def test_renewal_reason(days_later: int, hosts: list[str], expected: str | None) -> None:
    ca = build_ca(now=NOW)
    pair = build_certificate(["a.svc"], ca=ca, now=NOW)
    reason = renewal_reason(
        pair, ca_pem=ca.cert_pem, hosts=hosts, now=NOW + dt.timedelta(days=days_later)
    )
    assert (
        reason is None if expected is None else reason is not None and reason.startswith(expected)
    )


def test_a_certificate_from_another_ca_or_with_another_key_must_be_renewed() -> None:
    ca, other = build_ca(now=NOW), build_ca(now=NOW)
    pair = build_certificate(["a.svc"], ca=other, now=NOW)
    assert renewal_reason(pair, ca_pem=ca.cert_pem, hosts=[], now=NOW) is not None
    mine = build_certificate(["a.svc"], ca=ca, now=NOW)
    swapped = type(mine)(mine.cert_pem, pair.key_pem)
    assert renewal_reason(swapped, ca_pem=ca.cert_pem, hosts=[], now=NOW) == (
        "private key does not match the certificate"
    )
    garbage = type(mine)(b"not pem", b"not pem")
    assert str(renewal_reason(garbage, ca_pem=ca.cert_pem, hosts=[], now=NOW)).startswith(
        "unreadable"
    )


def test_the_cert_dir_is_created_kept_and_renewed_with_the_same_ca(tmp_path: Path) -> None:
    hosts = ["localhost", "127.0.0.1"]
    assert ensure_cert_dir(tmp_path, hosts, now=NOW) == "created"
    ca_before = (tmp_path / "ca.crt").read_bytes()
    cert_before = (tmp_path / "tls.crt").read_bytes()
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == "0o600"
    assert ensure_cert_dir(tmp_path, hosts, now=NOW + dt.timedelta(days=100)) == "kept"
    assert ensure_cert_dir(tmp_path, hosts, now=NOW + dt.timedelta(days=340)) == "renewed"
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert (tmp_path / "tls.crt").read_bytes() != cert_before


def test_certificates_brought_without_a_ca_key_are_left_alone(tmp_path: Path) -> None:
    ca = build_ca(now=NOW)
    pair = build_certificate(["x"], ca=ca, now=NOW - dt.timedelta(days=400))
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    assert ensure_cert_dir(tmp_path, ["y"], now=NOW) == "kept"
    assert (tmp_path / "tls.crt").read_bytes() == pair.cert_pem
