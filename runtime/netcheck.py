"""Which network addresses the runtime may connect to: one home for the rules.

Why: the tuning job fetches user URLs (runtime.tuning.fetch) and the adapter, data and
weights pullers talk to user-named OCI registries (runtime.adapters.oci,
runtime.weights.registry). Both run inside the cluster, next to the node's cloud metadata
endpoint and the cluster's private services, so both must refuse to be pointed there, and
both must decide it the same way: resolve the host once, refuse when ANY answer is not
allowed, and hand back the one checked address the caller then connects to (so a second DNS
answer can never be used).

The rules: cloud metadata names and addresses are never allowed. Loopback (127.0.0.0/8,
::1, `localhost`) is allowed only when `Policy.allow_loopback` is set, which exists for this
project's own tests (env `KAITO_ALLOW_LOOPBACK=1`, loudly logged). Private addresses
(RFC 1918, IPv6 ULA) are allowed only when `Policy.allow_private` is set: an operator's
choice for registries inside the cluster or behind a private endpoint (env
`KAITO_OCI_ALLOW_PRIVATE=1`, read by the OCI side only; URL inputs never allow them).
Link-local, multicast, unspecified, reserved and other non-public addresses are never
allowed.

This module must not open a connection, and must not read the environment except through
the mapping a caller passes to `loopback_from_env` / `oci_policy`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LOG = logging.getLogger("kaito.netcheck")
ALLOW_LOOPBACK_ENV = "KAITO_ALLOW_LOOPBACK"
ALLOW_PRIVATE_ENV = "KAITO_OCI_ALLOW_PRIVATE"
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The host or one of its addresses is not allowed; `why` says which rule."""

    def __init__(self, host: str, why: str, address: str | None = None) -> None:
        self.host, self.why, self.address = host, why, address
        where = f"resolves to {address}, {why}" if address is not None else f"is {why}"
        super().__init__(f"host {host!r} {where}")


class Unresolved(Exception):
    """The host has no address (the resolver failed or answered nothing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What may be connected to besides public unicast addresses."""

    allow_loopback: bool = False  # this project's own tests only
    allow_private: bool = False  # RFC 1918 / ULA: registries inside the cluster


STRICT = Policy()  # public unicast addresses only


def loopback_from_env(environ: Mapping[str, str], log: logging.Logger = LOG) -> bool:
    """Whether `KAITO_ALLOW_LOOPBACK=1` is set; logs a loud warning when it is."""
    allow = environ.get(ALLOW_LOOPBACK_ENV, "") == "1"
    if allow:
        log.warning(
            "WARNING: %s=1: connecting to LOOPBACK addresses is ALLOWED. This setting "
            "exists for the project's own tests only and must never be set in a cluster.",
            ALLOW_LOOPBACK_ENV,
        )
    return allow


def oci_policy(environ: Mapping[str, str], log: logging.Logger = LOG) -> Policy:
    """The OCI pullers' and pushers' policy: loopback (tests) and private (operator) switches."""
    private = environ.get(ALLOW_PRIVATE_ENV, "") == "1"
    if private:
        log.info("%s=1: registries on private (RFC 1918 / ULA) addresses are allowed",
                 ALLOW_PRIVATE_ENV)
    return Policy(allow_loopback=loopback_from_env(environ, log), allow_private=private)


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses the system resolver returns for host:port, in its order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unresolved(f"cannot resolve host {host!r}: {exc.strerror}") from exc
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in seen:
            seen.append(address)
    return seen


def address_problem(
    address: str, *, allow_loopback: bool, allow_private: bool = False
) -> str | None:
    """Why this address must not be connected to, or None when it is allowed."""
    ip: IPAddress = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    checks = (
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_reserved, "a reserved address"),
    )
    why = next((why for bad, why in checks if bad), None)
    if why is not None:
        return why
    if _rfc1918_or_ula(ip):
        return None if allow_private else "a private address"
    if ip.is_private:
        return "a private address"  # documentation, benchmarking, ... ranges: never
    return None if ip.is_global else "a non-public address"


def _rfc1918_or_ula(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in net for net in _RFC1918)
    return ip in _ULA


_RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                     "192.168.0.0/16"))
_ULA = ipaddress.IPv6Network("fc00::/7")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_host(host: str, port: int, policy: Policy, resolver: Resolver) -> str:
    """Resolve host once, raise Refused if any answer is not allowed, return the one to use.

    A literal address is checked as it is, without asking the resolver."""
    name = host.lower().rstrip(".").strip("[]")
    if name in METADATA_NAMES:
        raise Refused(host, "a cloud metadata endpoint")
    if (name == "localhost" or name.endswith(".localhost")) and not policy.allow_loopback:
        raise Refused(host, "the local machine")
    addresses = [name] if _is_address(name) else resolver(host, port)
    if not addresses:
        raise Unresolved(f"host {host!r} resolved to no address")
    for address in addresses:
        why = address_problem(address, allow_loopback=policy.allow_loopback,
                              allow_private=policy.allow_private)
        if why is not None:
            raise Refused(host, why, None if address == name else address)
    return addresses[0]
