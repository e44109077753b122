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
# The image reference grammar of the container registries' reference library (the one
# upstream Kaito parses with): lower-case path components joined by '.', '_', '__' or
# dashes; a registry host (may be upper case, may have a port) only before the first '/';
# a tag of up to 128 word characters, dots and dashes; an optional digest.
PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST_PART = r"(?:\w|\w[\w-]*\w)"  # '_' is no host character: image_case_warning
REGISTRY = re.compile(rf"^(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?$")
TAG = re.compile(r"^\w[\w.-]{0,127}$")
DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
IMAGE_NAME_MAX = 255
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


def _is_registry(first: str) -> bool:
    """Whether the first of several '/'-separated parts names a registry host."""
    return "." in first or ":" in first or first == "localhost" or first != first.lower()


def image_problem(value: str) -> str | None:
    """None for an image reference (registry/name[:tag][@digest]) that pulls could parse."""
    bad = f"{value!r} is not an image reference such as registry.example.com/name:tag"
    if not value or len(value) > 4096:
        return bad
    name, at, digest = value.partition("@")
    if at and not DIGEST.match(digest):
        return bad
    if name.rfind(":") > name.rfind("/"):
        name, _, tag = name.rpartition(":")
        if not TAG.match(tag):
            return bad
    parts = name.split("/")
    if len(parts) > 1 and _is_registry(parts[0]):
        if not REGISTRY.match(parts[0]):
            return bad
        parts = parts[1:]
    if not name or len(name) > IMAGE_NAME_MAX or not all(
        PATH_COMPONENT.match(p.lower()) for p in parts  # upper case: image_case_warning
    ):
        return bad
    return None


def image_case_warning(value: str) -> str | None:
    """A warning for upper case in the repository path or '_' in the registry host:
    registries refuse such names (and upstream Kaito refuses them at admission), but the
    seed's examples carry placeholders like ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE, which
    must still apply as written."""
    if image_problem(value):
        return None
    name = value.partition("@")[0]
    if name.rfind(":") > name.rfind("/"):
        name = name.rpartition(":")[0]
    parts = name.split("/")
    host = parts[0] if len(parts) > 1 and _is_registry(parts[0]) else ""
    path = parts[1:] if host else parts
    reasons = [
        *(["upper case in the repository path"] if any(p != p.lower() for p in path) else []),
        *(["'_' in the registry host"] if "_" in host else []),
    ]
    if not reasons:
        return None
    return f"{value!r}: registries refuse {' and '.join(reasons)}; is it a placeholder?"


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
