"""Syntax checks shared by the validators: Kubernetes names, image references, data URLs.

The URL check is the guard against server-side request forgery: a tuning job downloads
every `tuning.input.urls` entry from inside the cluster, so a URL must be http(s) and must
not name a loopback, private, link-local, shared or cloud-metadata address, in any of the
spellings an IP address can take. Pure: no DNS lookups, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IMAGE_REF = re.compile(
    r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*(:\d+)?(/[A-Za-z0-9]+([._-]+[A-Za-z0-9]+)*)*"
    r"(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
BLOCKED_HOSTS = frozenset(
    {
        "localhost",
        "metadata",
        "metadata.google.internal",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
BLOCKED_NETWORKS = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT, shared address space
    ipaddress.ip_network("168.63.129.16/32"),  # Azure host wire server
    ipaddress.ip_network("0.0.0.0/8"),
)
NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$")


def dns_label_problem(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not DNS_LABEL.match(value):
        return (
            "must be a lower-case RFC 1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def dns_subdomain_problem(value: str) -> str | None:
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not DNS_SUBDOMAIN.match(value):
        return "must be a lower-case RFC 1123 subdomain: lower-case letters, digits, '-' and '.'"
    return None


def image_problem(value: str) -> str | None:
    """None for a plausible image reference (registry/name[:tag][@digest])."""
    if not value or len(value) > 4096 or not IMAGE_REF.match(value):
        return f"{value!r} is not an image reference such as registry.example.com/name:tag"
    return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:  # not a canonical address: it may still be a legacy numeric spelling
        if not NUMERIC_HOST.match(host):
            return None
    try:  # legacy spellings: 2130706433, 0x7f000001, 0177.0.0.1, 127.1
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return _blocked(mapped)
    flags = (
        ip.is_loopback,
        ip.is_private,
        ip.is_link_local,
        ip.is_unspecified,
        ip.is_reserved,
        ip.is_multicast,
    )
    return any(flags) or any(ip in net for net in BLOCKED_NETWORKS if net.version == ip.version)


def url_problem(url: str) -> str | None:
    """None for a URL a tuning job may download; otherwise why not."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return "must use HTTP or HTTPS"
    if not host:
        return "must name a host"
    host = host.rstrip(".").lower()
    if host in BLOCKED_HOSTS or host.endswith(".localhost"):
        return "must not point at a local or metadata endpoint"
    ip = _address(host.split("%", 1)[0])
    if ip is not None and _blocked(ip):
        return "must not point at a loopback, private, link-local or metadata address"
    return None
