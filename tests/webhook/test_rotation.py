"""Replacing the certificate files while requests flow: new connections get the new
certificate, keep-alive connections go on, and no request fails."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from rig.reviews import phi3, review
from tests.support.webhook import Server, start_server, stop_server
from webhook.certs import KeyPair, build_certificate

BODY = json.dumps(review(phi3()))
HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path / "certs", tmp_path / "server.log", "--threads", "4")
    yield running
    stop_server(running)


def serial_of(conn: http.client.HTTPSConnection) -> int:
    assert isinstance(conn.sock, ssl.SSLSocket)
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


class Traffic(threading.Thread):
    """Sends /validate requests until stopped, on new connections or on one kept alive."""

    def __init__(self, server: Server, *, keep_alive: bool) -> None:
        super().__init__(daemon=True)
        self.context = ssl.create_default_context(cafile=str(server.ca))
        self.port, self.keep_alive = server.port, keep_alive
        self.stop = threading.Event()
        self.serials: list[int] = []
        self.failures: list[str] = []
        self.count = 0

    def run(self) -> None:
        conn: http.client.HTTPSConnection | None = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.context, timeout=10
                )
            try:
                conn.request("POST", "/validate", BODY, HEADERS)
                resp = conn.getresponse()
                answer = json.loads(resp.read())
                if resp.status != 200 or answer["response"]["allowed"] is not True:
                    self.failures.append(f"{resp.status} {answer}")
                self.serials.append(serial_of(conn))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append(repr(exc))
            self.count += 1
            if not self.keep_alive:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


def until(done: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    """Wait for `done`; the limit only ends a test that would otherwise hang."""
    deadline = time.monotonic() + limit_s
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {limit_s:g} s"
        time.sleep(0.05)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_a_rotated_certificate_is_served_to_new_connections_without_a_failed_request(
    own_server: Server,
) -> None:
    certs = own_server.cert_dir
    ca = KeyPair((certs / "ca.crt").read_bytes(), (certs / "ca.key").read_bytes())
    old_serial = KeyPair((certs / "tls.crt").read_bytes(), b"").cert.serial_number
    fresh, kept = Traffic(own_server, keep_alive=False), Traffic(own_server, keep_alive=True)
    fresh.start()
    kept.start()
    # Counts, not durations: at least 10 requests each before the swap and 10 more after
    # the new certificate was first served (how many a second is the benchmark's business).
    until(lambda: fresh.count > 10 and kept.count > 10, "traffic before the swap")
    new = build_certificate(["127.0.0.1", "localhost"], ca=ca, now=dt.datetime.now(dt.UTC))
    write_atomic(certs / "tls.key", new.key_pem)
    write_atomic(certs / "tls.crt", new.cert_pem)
    until(lambda: new.cert.serial_number in fresh.serials, "the new certificate served")
    more_fresh, more_kept = fresh.count + 10, kept.count + 10
    until(lambda: fresh.count > more_fresh and kept.count > more_kept, "traffic after the swap")
    fresh.stop.set()
    kept.stop.set()
    fresh.join(15)
    kept.join(15)
    assert fresh.failures == []
    assert kept.failures == []
    assert fresh.serials[0] == old_serial
    assert fresh.serials[-1] == new.cert.serial_number
    assert set(kept.serials) == {old_serial}
