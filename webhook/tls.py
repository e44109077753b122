"""A server SSLContext that follows the certificate files, for gunicorn's `ssl_context` hook.

Why: certificates rotate (kubelet swaps the mounted Secret, or we renew our own) and the
webhook must pick them up without a restart and without dropping a request. gunicorn asks
for a context on every new TLS connection; we hand back a cached one and rebuild it only
when the files changed, keeping the old one while a half-written pair does not load.
With `renew` set (certificates we made ourselves) it also renews the serving certificate
before expiry, at most once a minute, under a file lock shared by all workers.

The context also bounds how long one connection may hold a gunicorn thread before its
request is in: gthread runs the TLS handshake and reads the request head and body in a
pool thread with a blocking socket, so a client that stops half-way (or drips a byte at a
time) would keep that thread for as long as it likes, and a few such clients starve the
apiserver's calls. Our sockets (`ReadDeadlineSocket`) give every read a deadline of
`read_timeout_s` from the start of the request: from the handshake for a new connection,
from the moment gunicorn takes a kept-alive connection back into a thread (it switches the
socket to blocking mode then) for the next one. A read past it closes the connection
(reported to gunicorn as a reset, with one INFO line from us). Writes get `read_timeout_s`
per operation.
Must not: change the files unless `renew` is set, fail a connection because of a
rotation in progress when a previous context exists, or let a blocking read wait longer
than the request's deadline.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from webhook.certs import ensure_cert_dir

log = logging.getLogger("kaito.webhook.tls")
CHECK_RENEWAL_EVERY_S = 60.0
DEFAULT_READ_TIMEOUT_S = 5.0


class ReadDeadlineSocket(ssl.SSLSocket):
    """An SSLSocket whose blocking reads share one deadline per request.

    "Blocking" here always means "with a timeout": `setblocking(True)` sets the context's
    `read_timeout_s` as the socket timeout and starts a new request's deadline.
    """

    _deadline: float | None = None

    @property
    def read_timeout_s(self) -> float:
        context = self.context
        assert isinstance(context, DeadlineContext)
        return context.read_timeout_s

    def setblocking(self, flag: bool) -> None:
        if not flag:
            super().setblocking(False)
            return
        self._deadline = time.monotonic() + self.read_timeout_s
        self.settimeout(self.read_timeout_s)

    def do_handshake(self, block: bool = False) -> None:
        self._bounded(lambda: super(ReadDeadlineSocket, self).do_handshake(block))

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        return self._bounded(lambda: super(ReadDeadlineSocket, self).read(len, buffer))

    def _bounded(self, op: Callable[[], Any]) -> Any:
        outer = self.gettimeout()
        if outer == 0.0:  # non-blocking: gunicorn's poller, nothing waits
            return op()
        now = time.monotonic()
        if self._deadline is None:  # the handshake of a new connection
            self._deadline = now + self.read_timeout_s
        remaining = self._deadline - now
        if remaining <= 0:
            raise self._slow("no complete request")
        socket.socket.settimeout(self, remaining if outer is None else min(outer, remaining))
        try:
            return op()
        except TimeoutError as exc:
            raise self._slow("no complete request") from exc
        finally:
            socket.socket.settimeout(self, outer)

    def _slow(self, what: str) -> ConnectionResetError:
        """The error for a read past the deadline: one INFO line here, and a "reset" for
        gunicorn, which then closes the connection quietly (a TimeoutError would get an
        ERROR with a traceback per slow client)."""
        try:
            peer = str(self.getpeername()[0])
        except OSError:
            peer = "a client"
        reason = f"{what} within {self.read_timeout_s:g} s"
        log.info("closing the connection from %s: %s", peer, reason)
        return ConnectionResetError(errno.ECONNRESET, reason)


class DeadlineContext(ssl.SSLContext):
    """A server context whose sockets are `ReadDeadlineSocket`s (see the module docstring)."""

    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock.settimeout(self.read_timeout_s)  # the raw socket's timeout carries over
        return super().wrap_socket(sock, *args, **kwargs)


DeadlineContext.sslsocket_class = ReadDeadlineSocket


class CertReloader:
    """Builds and caches the SSLContext for cert_dir/tls.crt + tls.key."""

    def __init__(
        self,
        cert_dir: Path,
        *,
        renew_hosts: Sequence[str] = (),
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        if read_timeout_s <= 0:
            raise ValueError(f"read timeout must be positive, got {read_timeout_s!r}")
        self.cert_dir = cert_dir
        self.read_timeout_s = read_timeout_s
        self.cert_file = cert_dir / "tls.crt"
        self.key_file = cert_dir / "tls.key"
        self.renew_hosts = tuple(renew_hosts)
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._context: DeadlineContext | None = None
        self._next_renewal_check = 0.0

    def ssl_context(
        self, conf: object, default_factory: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        """gunicorn's hook: the current context (arguments unused; the files are the truth)."""
        return self.context()

    def context(self) -> ssl.SSLContext:
        """The context for the files as they are now; the previous one while they do not load."""
        if self.renew_hosts and time.monotonic() >= self._next_renewal_check:
            self._renew()
        stamp = self._file_stamp()
        if stamp == self._stamp and self._context is not None:
            return self._context
        with self._lock:
            if stamp != self._stamp or self._context is None:
                self._reload(stamp)
        assert self._context is not None
        return self._context

    def _reload(self, stamp: tuple[int, ...]) -> None:
        context = DeadlineContext(ssl.PROTOCOL_TLS_SERVER)
        context.read_timeout_s = self.read_timeout_s
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            if self._context is None:
                raise
            log.warning("keeping the previous TLS certificate: %s", exc)
            return
        if self._context is not None:
            log.info("loaded a new TLS certificate from %s", self.cert_file)
        self._context, self._stamp = context, stamp

    def _file_stamp(self) -> tuple[int, ...]:
        parts: list[int] = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)
            except OSError:
                parts.extend((0, 0, 0))
                continue
            parts.extend((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(parts)

    def _renew(self) -> None:
        self._next_renewal_check = time.monotonic() + CHECK_RENEWAL_EVERY_S
        try:
            with open(self.cert_dir / ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                result = ensure_cert_dir(
                    self.cert_dir, self.renew_hosts, now=dt.datetime.now(dt.UTC)
                )
        except (OSError, ValueError) as exc:
            log.warning("could not check the serving certificate for renewal: %s", exc)
            return
        if result != "kept":
            log.info("serving certificate %s", result)
