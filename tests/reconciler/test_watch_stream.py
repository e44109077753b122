"""A watch stream cut mid-way is a KubeError (status 0), so watch mode restarts the watch.

Why: urllib3 reports a chunked response that ends early as ProtocolError, which is neither
OSError nor KubeError; before, it escaped `reconciler.watch._watch_one` and killed that
kind's watch thread for good (the loop then only noticed changes at the next resync).
Must not: reach anything but its own loopback server.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient, Configuration

from reconciler import watch
from reconciler.kube import Kube, KubeError

EVENT = {"type": "ADDED", "object": {"kind": "Pod", "metadata": {"name": "p"}}}


def _serve_one_cut_stream(server: socket.socket, answers: int) -> None:
    for _ in range(answers):
        conn, _addr = server.accept()
        with conn:
            conn.recv(65536)
            line = json.dumps(EVENT).encode() + b"\n"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                + f"{len(line):x}\r\n".encode() + line + b"\r\n"
            )  # no terminating 0-chunk: the connection just ends


@pytest.fixture
def cut_server() -> Iterator[tuple[Kube, threading.Thread]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    thread = threading.Thread(target=_serve_one_cut_stream, args=(server, 2), daemon=True)
    thread.start()
    config = Configuration()
    config.host = f"http://127.0.0.1:{server.getsockname()[1]}"
    api = ApiClient(config)
    try:
        yield Kube(api), thread
    finally:
        api.close()  # type: ignore[no-untyped-call]
        server.close()


def test_a_cut_stream_yields_its_events_then_a_transport_kube_error(
    cut_server: tuple[Kube, threading.Thread],
) -> None:
    kube, _thread = cut_server
    stream = kube.stream("/api/v1/pods", {})
    assert next(stream) == EVENT
    with pytest.raises(KubeError) as caught:
        next(stream)
    assert caught.value.status == 0
    assert caught.value.reason == "ProtocolError"


def test_the_watch_thread_survives_a_cut_stream_and_watches_again(
    cut_server: tuple[Kube, threading.Thread],
) -> None:
    kube, server_thread = cut_server
    due, stop = threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=watch._watch_one, args=(kube, None, "v1", "Pod", "", due, stop), daemon=True
    )
    watcher.start()
    server_thread.join(timeout=60)  # the server answered twice: the watch came back
    stop.set()
    watcher.join(timeout=60)
    assert not server_thread.is_alive()
    assert not watcher.is_alive()
    assert due.is_set()
