"""A REAL `kaito webhook serve` (gunicorn, TLS) for tests, and its registration on the cluster.

Why: the webhook tier and the GitOps drift test both need the real server on a free
loopback port, and both register it with the tests' control plane for one namespace
only; this is that code, once.

It must not: skip (a server that does not come up FAILS the test with its log tail),
bind anything but loopback, leave a server running after `stop_server`, or register a
webhook for namespaces other than the one it was given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from kubernetes import client

from rig.procs import free_port
from rig.webhook import register_webhooks, unregister_webhooks

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Server:
    """A running webhook server: its base URL, cert dir and a session that trusts its CA."""

    url: str
    port: int
    cert_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def ca(self) -> Path:
        return self.cert_dir / "ca.crt"

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify` otherwise
        session.verify = str(self.ca)
        return session


def start_server(
    cert_dir: Path, log: Path, *extra: str, env: dict[str, str] | None = None,
    port: int | None = None,
) -> Server:
    """Start `python -m webhook serve` on `port` (a free one when None: a restart passes the
    old one); FAIL (not skip) when it does not come up."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "webhook",
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
        "--cert-dir",
        str(cert_dir),
        "--ip",
        "127.0.0.1",
        "--dns-name",
        "localhost",
        *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = Server(f"https://127.0.0.1:{port}", port, cert_dir, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"webhook server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if server.ca.exists() and _ready(server):
            return server
        time.sleep(0.1)
    stop_server(server)
    pytest.fail(f"webhook server not ready within 60 s:\n{log.read_text()[-3000:]}")


def _ready(server: Server) -> bool:
    try:
        return server.session().get(server.url + "/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=5)


@contextmanager
def admitting(
    api_client: client.ApiClient, server: Server, namespace: str, *, tag: str
) -> Iterator[str]:
    """`server` registered by URL as the webhook for `namespace` only; removed on exit.

    The namespace gets the label `kaito-py/<tag>: <random id>` and the configurations,
    named `kaito-<tag>-<id>`, select on it, so parallel sessions never see each other's.
    """
    mark = {f"kaito-py/{tag}": uuid.uuid4().hex[:12]}
    client.CoreV1Api(api_client).patch_namespace(namespace, {"metadata": {"labels": mark}})
    name = f"kaito-{tag}-{mark[f'kaito-py/{tag}']}"
    register_webhooks(
        api_client,
        url=server.url,
        ca_bundle=server.ca.read_bytes(),
        name=name,
        namespace_labels=mark,
    )
    try:
        yield namespace
    finally:
        unregister_webhooks(api_client, name=name)
