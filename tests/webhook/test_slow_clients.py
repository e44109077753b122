"""A few slow connections do not starve the real server started with the shipped settings.

gunicorn's gthread worker runs the TLS handshake and the reading of the request head in a
pool thread. A client that connects and sends nothing, stops half-way through the
handshake, or sends half a request line keeps that thread for as long as the socket
allows. The server here runs with exactly the `kaito webhook serve` arguments of the
shipped Deployment (workers, threads, read timeout, keep-alive) and gets more such
connections than it has threads; an AdmissionReview sent after them must still be answered
before the apiserver would give up (the configurations' `timeoutSeconds`, used as the
client's own timeout: not a performance figure, the line between answered and starved).
A second server with one worker of two threads and the shipped read timeout gets more
slow connections than threads, a byte-at-a-time dripper among them: only the per-request
read deadline (not the thread count) can keep that one answering.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from rig.reviews import phi3, review
from tests.support.webhook import Server, start_server, stop_server

REPO = Path(__file__).resolve().parents[2]
WEBHOOK = REPO / "manifests" / "base" / "webhook"
SLOW_OF_EACH_KIND = 8


def shipped_serve_args() -> list[str]:
    """The Deployment's `kaito webhook serve` args, minus the bind address and cert dir."""
    deploy = yaml.safe_load((WEBHOOK / "deployment.yaml").read_text())
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kaito", "webhook", "serve"]
    return [
        a for a in container["args"] if not a.startswith(("--bind=", "--cert-dir=", "--dns-name="))
    ]


def apiserver_timeout_s() -> int:
    """The longest `timeoutSeconds` of the shipped webhook configurations."""
    docs = yaml.safe_load_all((WEBHOOK / "webhookconfigurations.yaml").read_text())
    return max(int(hook["timeoutSeconds"]) for doc in docs if doc for hook in doc["webhooks"])


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("slow-clients")
    running = start_server(base / "certs", base / "server.log", *shipped_serve_args())
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def two_thread_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("slow-clients-small")
    timeout = [a for a in shipped_serve_args() if a.startswith("--read-timeout=")]
    args = ["--workers=1", "--threads=2", *timeout]
    running = start_server(base / "certs", base / "server.log", *args)
    yield running
    stop_server(running)


def tcp(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def tls(server: Server) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(server.ca))
    return context.wrap_socket(tcp(server), server_hostname="127.0.0.1")


def idle(server: Server) -> socket.socket:
    """Connected, sends nothing."""
    return tcp(server)


def half_handshake(server: Server) -> socket.socket:
    """Sends the first bytes of a TLS ClientHello, then stops."""
    sock = tcp(server)
    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    return sock


def half_request_line(server: Server) -> socket.socket:
    """Completes the TLS handshake, then sends half a request line."""
    sock = tls(server)
    sock.sendall(b"POST /valid")
    return sock


def half_second_request(server: Server) -> socket.socket:
    """One full request on a kept-alive connection, then half of the next one's head."""
    sock = tls(server)
    body = json.dumps(review(phi3())).encode()
    head = (
        f"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    sock.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.")
    return sock


@contextmanager
def dripping(server: Server) -> Iterator[ssl.SSLSocket]:
    """Completes the TLS handshake, then sends a request head one byte every 0.2 s."""
    sock = tls(server)
    stop = threading.Event()
    head = b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"x" * 4000

    def drip() -> None:
        for byte in head:
            if stop.wait(0.2):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server closed it: what the bound is for
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        yield sock
    finally:
        stop.set()
        dripper.join(5)
        sock.close()


SLOW_KINDS: list[Callable[[Server], Any]] = [
    idle,
    half_handshake,
    half_request_line,
    half_second_request,
    dripping,
]


def admission_review(server: Server, timeout_s: float) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(server.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=timeout_s)
    try:
        conn.request(
            "POST",
            "/validate",
            json.dumps(review(phi3(), uid="after-slow")),
            {"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        answer: dict[str, Any] = json.loads(resp.read())
        return answer
    finally:
        conn.close()


def test_the_shipped_deployment_sets_every_connection_bound() -> None:
    flags = dict(a.split("=", 1) for a in shipped_serve_args())
    assert {"--workers", "--threads", "--read-timeout", "--keepalive"} <= set(flags)
    # a call queued behind slow clients waits about one read timeout: it must fit the
    # apiserver's own timeout with room to spare
    assert 0 < float(flags["--read-timeout"]) * 2 <= apiserver_timeout_s()


@pytest.mark.parametrize("kind", SLOW_KINDS, ids=lambda k: k.__name__)
def test_an_admission_review_is_answered_while_slow_connections_hold_on(
    shipped_server: Server, kind: Any
) -> None:
    with ExitStack() as held:
        for _ in range(SLOW_OF_EACH_KIND):
            held.enter_context(kind(shipped_server))
        answer = admission_review(shipped_server, apiserver_timeout_s())
        assert answer["response"] == {"uid": "after-slow", "allowed": True}


def test_an_admission_review_is_answered_while_idle_and_half_sent_requests_hold_on(
    shipped_server: Server,
) -> None:
    with ExitStack() as held:
        for kind in (idle, half_request_line):
            for _ in range(SLOW_OF_EACH_KIND):
                held.enter_context(kind(shipped_server))
        answer = admission_review(shipped_server, apiserver_timeout_s())
        assert answer["response"] == {"uid": "after-slow", "allowed": True}


@pytest.mark.parametrize("kind", SLOW_KINDS, ids=lambda k: k.__name__)
def test_more_slow_connections_than_threads_only_delay_an_admission_review(
    two_thread_server: Server, kind: Any
) -> None:
    with ExitStack() as held:
        for _ in range(3):
            held.enter_context(kind(two_thread_server))
        answer = admission_review(two_thread_server, apiserver_timeout_s())
        assert answer["response"] == {"uid": "after-slow", "allowed": True}
