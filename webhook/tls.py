"""A server SSLContext that follows the certificate files, for gunicorn's `ssl_context` hook.

Why: certificates rotate (kubelet swaps the mounted Secret, or we renew our own) and the
webhook must pick them up without a restart and without dropping a request. gunicorn asks
for a context on every new TLS connection; we hand back a cached one and rebuild it only
when the files changed, keeping the old one while a half-written pair does not load.
With `renew` set (certificates we made ourselves) it also renews the serving certificate
before expiry, at most once a minute, under a file lock shared by all workers.
Must not: change the files unless `renew` is set, or fail a connection because of a
rotation in progress when a previous context exists.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from webhook.certs import ensure_cert_dir

log = logging.getLogger("kaito.webhook.tls")
CHECK_RENEWAL_EVERY_S = 60.0


class CertReloader:
    """Builds and caches the SSLContext for cert_dir/tls.crt + tls.key."""

    def __init__(self, cert_dir: Path, *, renew_hosts: Sequence[str] = ()) -> None:
        self.cert_dir = cert_dir
        self.cert_file = cert_dir / "tls.crt"
        self.key_file = cert_dir / "tls.key"
        self.renew_hosts = tuple(renew_hosts)
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._context: ssl.SSLContext | None = None
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
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
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
