"""Fetching the tuning job's input URLs, safely: size and time limits, SSRF checks at fetch time.

Why: admission validation already refuses loopback, private, link-local and metadata URLs,
but DNS answers can change between admission and the Job running. So every fetch resolves
the host itself, refuses the request when ANY resolved address is not a public unicast
address, and then connects to exactly that checked address (the Host header and TLS name
stay the URL's host), so a second DNS answer can never be used. Redirects are followed by
hand, each target checked the same way. Downloads stop at a byte limit (Content-Length is
checked first, then the bytes actually read) and at connect, read and total deadlines.

Which addresses are allowed is decided by runtime.netcheck, shared with the OCI pullers.
`allow_loopback` exists only for this project's own tests (env `KAITO_ALLOW_LOOPBACK=1`,
read by the entry point); it admits 127.0.0.0/8 and ::1 only, never private or metadata
addresses, and is loudly logged when on. URL inputs never allow private addresses.

This module must not follow a redirect or open a connection without `check_host`, and
must not read more than the limit.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from runtime import netcheck
from runtime.jobstep import FetchError, FetchRefused
from runtime.netcheck import (
    ALLOW_LOOPBACK_ENV,
    METADATA_ADDRESSES,
    METADATA_NAMES,
    Resolver,
    address_problem,
)

__all__ = ["ALLOW_LOOPBACK_ENV", "METADATA_ADDRESSES", "METADATA_NAMES", "FetchSettings",
           "address_problem", "check_host", "fetch_all", "fetch_url", "local_name",
           "system_resolver"]
LOG = logging.getLogger("kaito.tune.fetch")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchSettings:
    max_bytes: int = 1 << 30
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    total_timeout: float = 3600.0
    max_redirects: int = 5
    allow_loopback: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> FetchSettings:
        allow = netcheck.loopback_from_env(environ, LOG)
        return cls(allow_loopback=allow, **overrides)  # type: ignore[arg-type]


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses the system resolver returns for host:port (runtime.netcheck)."""
    try:
        return netcheck.system_resolver(host, port)
    except netcheck.Unresolved as exc:
        raise FetchError(str(exc)) from exc


def check_host(host: str, port: int, *, allow_loopback: bool, resolver: Resolver) -> str:
    """runtime.netcheck.check_host with the fetch step's errors (never private addresses)."""
    try:
        return netcheck.check_host(
            host, port, netcheck.Policy(allow_loopback=allow_loopback), resolver
        )
    except netcheck.Refused as exc:
        raise FetchRefused(str(exc)) from exc
    except netcheck.Unresolved as exc:
        raise FetchError(str(exc)) from exc


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to `address`, while the Host header names the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to `address`, verifying the certificate for the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch_url(
    url: str, dest: Path, settings: FetchSettings, *, resolver: Resolver = system_resolver
) -> Path:
    """Download `url` into the file `dest`, following checked redirects; return `dest`."""
    deadline = time.monotonic() + settings.total_timeout
    current = url
    for _ in range(settings.max_redirects + 1):
        response, conn = _open(current, settings, resolver)
        try:
            if response.status in REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise FetchError(
                        f"{_show(current)} answered {response.status} without Location"
                    )
                LOG.info("redirect %s -> %s", _show(current), _show(location))
                current = urljoin(current, location)
                continue
            if response.status != 200:
                raise FetchError(
                    f"{_show(current)} answered HTTP {response.status} {response.reason}"
                )
            _save(response, dest, settings, deadline, current)
            return dest
        finally:
            response.close()
            conn.close()
    raise FetchError(f"{_show(url)}: more than {settings.max_redirects} redirects")


def _open(
    url: str, settings: FetchSettings, resolver: Resolver
) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchRefused(f"{_show(url)}: only http and https URLs with a host are allowed")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = check_host(
        parts.hostname, port, allow_loopback=settings.allow_loopback, resolver=resolver
    )
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    conn = kind(parts.hostname, port, address, settings.connect_timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(settings.read_timeout)
        conn.request("GET", target, headers={"User-Agent": "kaito-tune", "Accept": "*/*"})
        return conn.getresponse(), conn
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise FetchError(f"{_show(url)}: {exc or type(exc).__name__}") from exc


def _save(
    response: http.client.HTTPResponse,
    dest: Path,
    settings: FetchSettings,
    deadline: float,
    url: str,
) -> None:
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > settings.max_bytes:
        raise FetchError(
            f"{_show(url)} is {int(length)} bytes, over the limit of {settings.max_bytes} bytes"
        )
    part = dest.with_name(dest.name + ".part")
    total = 0
    try:
        with open(part, "wb") as fh:
            while chunk := response.read(CHUNK):
                total += len(chunk)
                if total > settings.max_bytes:
                    raise FetchError(
                        f"{_show(url)} is over the limit of {settings.max_bytes} bytes"
                    )
                if time.monotonic() > deadline:
                    raise FetchError(f"{_show(url)}: took longer than {settings.total_timeout:g} s")
                fh.write(chunk)
    except (OSError, http.client.HTTPException) as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"{_show(url)}: download failed: {exc or type(exc).__name__}") from exc
    except FetchError:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)


def _show(url: str) -> str:
    """The URL without its query (presigned URLs carry secrets there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?..." if parts.query else "")


def local_name(index: int, url: str) -> str:
    """A safe file name for the index-th URL: its last path segment, sanitized."""
    base = urlsplit(url).path.rsplit("/", 1)[-1] or "data"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:100] or "data"
    return f"{index:03d}-{base}"


def fetch_all(
    urls: Sequence[str],
    dest_dir: Path,
    settings: FetchSettings,
    *,
    resolver: Resolver = system_resolver,
) -> list[Path]:
    """Fetch every URL into dest_dir; the byte limit applies to the sum of all files."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    used = 0
    for index, url in enumerate(urls):
        left = settings.max_bytes - used
        if left <= 0:
            raise FetchError(f"inputs are over the limit of {settings.max_bytes} bytes in total")
        each = dataclasses.replace(settings, max_bytes=left)
        path = fetch_url(url, dest_dir / local_name(index, url), each, resolver=resolver)
        used += path.stat().st_size
        LOG.info("fetched %s (%d bytes)", _show(url), path.stat().st_size)
        paths.append(path)
    return paths
