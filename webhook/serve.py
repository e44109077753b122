"""`kaito webhook serve`: gunicorn over TLS in front of `webhook.app:create_app()`.

Why: the apiserver calls webhooks over HTTPS only. This starts gunicorn programmatically
(threaded workers, keep-alive), makes a CA and a serving certificate when the cert dir
has none, and plugs in `webhook.tls.CertReloader` so rotated files are served to new
connections without a restart.

Connection bounds (why each exists is in docs/security.md, "Webhook connections"): the
shipped Deployment sets workers, threads, `--read-timeout` (the whole TLS handshake plus
request head and body must arrive within it, enforced per socket by `webhook.tls`) and
`--keepalive` (how long an idle kept-alive connection stays open; it holds no thread).
Must not: decide admission, or start anything before the settings and certs check out.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from webhook.certs import ensure_cert_dir
from webhook.settings import Settings, SettingsError
from webhook.tls import DEFAULT_READ_TIMEOUT_S, CertReloader

log = logging.getLogger("kaito.webhook")
DEFAULT_KEEPALIVE_S = 15


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """What `kaito webhook serve` was asked for."""

    host: str
    port: int
    cert_dir: Path
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    workers: int = 1
    threads: int = 4
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    keepalive_s: int = DEFAULT_KEEPALIVE_S
    log_level: str = "info"

    def hosts(self) -> list[str]:
        """The serving certificate's SANs: those asked for, else localhost and the bind address."""
        hosts = list(self.dns_names) + list(self.ips)
        if not hosts:
            hosts = ["localhost", "127.0.0.1"]
            if self.host not in ("", "0.0.0.0", "::", "127.0.0.1"):  # noqa: S104 (names, not a bind)
                hosts.append(self.host)
        return hosts


def parse_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:8443`) into its parts; ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--bind {text!r}: expected HOST:PORT with a port in 1..65535")
    host = host.strip("[]")
    if host and not host.replace("-", "").replace(".", "").isalnum():
        ipaddress.ip_address(host)
    return host, int(port)


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = dict(options)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from webhook.app import create_app

        return create_app()


def gunicorn_options(opts: ServeOptions, reloader: CertReloader) -> dict[str, Any]:
    """gunicorn settings: TLS with our reloading context, threads, keep-alive, bounded requests.

    `timeout` is gthread's heartbeat (the worker's main loop, not a request); a stopping
    worker gives requests in flight `graceful_timeout`, which covers a whole read deadline.
    """
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    options: dict[str, Any] = {
        "bind": [f"{host}:{opts.port}"],
        "workers": opts.workers,
        "worker_class": "gthread",
        "threads": opts.threads,
        "keepalive": opts.keepalive_s,
        "timeout": 30,
        "graceful_timeout": max(10, math.ceil(opts.read_timeout_s) + 5),
        "certfile": str(reloader.cert_file),
        "keyfile": str(reloader.key_file),
        "ssl_context": reloader.ssl_context,
        "preload_app": True,
        "loglevel": opts.log_level,
        "errorlog": "-",
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "proc_name": "kaito-webhook",
        # gunicorn's control socket (resize, reload, stop) is an interface we do not use
        "control_socket_disable": True,
    }
    if opts.workers > 1:
        options["child_exit"] = _mark_worker_dead
    return options


def _mark_worker_dead(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def serve(opts: ServeOptions, environ: MutableMapping[str, str]) -> int:
    """Check settings, make certs if needed, and run gunicorn until it is stopped."""
    try:
        Settings.from_env(environ)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=opts.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    hosts = opts.hosts()
    result = ensure_cert_dir(opts.cert_dir, hosts, now=dt.datetime.now(dt.UTC))
    log.info("certificates in %s: %s", opts.cert_dir, result)
    owns_ca = (opts.cert_dir / "ca.key").is_file()
    reloader = CertReloader(
        opts.cert_dir, renew_hosts=hosts if owns_ca else (), read_timeout_s=opts.read_timeout_s
    )
    environ.setdefault("KAITO_WEBHOOK_CERT_DIR", str(opts.cert_dir))
    multiproc_dir = None
    if opts.workers > 1 and not environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiproc_dir = tempfile.mkdtemp(prefix="kaito-webhook-metrics-")
        environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    try:
        _Gunicorn(gunicorn_options(opts, reloader)).run()
    finally:
        if multiproc_dir is not None:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
    return 0


def main(opts: ServeOptions) -> int:
    """Entry used by the CLI: the process environment is the settings source."""
    return serve(opts, os.environ)


def options_from(
    bind: str, cert_dir: str, dns: Sequence[str], ips: Sequence[str], **kw: Any
) -> ServeOptions:
    """Build `ServeOptions`, validating the bind address and IPs (ValueError with the reason)."""
    host, port = parse_bind(bind)
    for ip in ips:
        ipaddress.ip_address(ip)
    return ServeOptions(
        host=host, port=port, cert_dir=Path(cert_dir), dns_names=tuple(dns), ips=tuple(ips), **kw
    )
