"""Fixtures for the webhook tests: the catalog, and a REAL `kaito webhook serve` (gunicorn, TLS)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from presets.catalog import Catalog, load_catalog

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    cert_dir: Path, log: Path, *extra: str, env: dict[str, str] | None = None
) -> Server:
    """Start `python -m webhook serve` on a free port; FAIL (not skip) when it does not come up."""
    port = free_port()
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


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real gunicorn over TLS for the session's webhook tests."""
    base = tmp_path_factory.mktemp("webhook")
    running = start_server(base / "certs", base / "server.log", "--threads", "4")
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def https(server: Server) -> Iterator[requests.Session]:
    with server.session() as session:
        yield session
