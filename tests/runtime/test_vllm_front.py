"""The GPU pods' front (/chat, /health, /metrics, /v1/* proxy) against stand-in upstreams.

vLLM cannot run here; small servers on loopback stand in for its OpenAI server (a Flask
app, and an aiohttp one where a test needs hundreds of open streams), so these tests check
OUR translation and proxying (streaming included), that the front sets no concurrency limit
and that a client that stops reading holds up no one else. The last tests run the front's
real command line with a stand-in `vllm` package on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import requests
import uvloop
from aiohttp import web
from flask import Flask, Response, jsonify, request

from runtime.serving.vllm_front import create_front_app, vllm_environment
from tests.runtime.conftest import _serve


def fake_vllm(seen: list[dict[str, Any]]) -> Flask:
    app = Flask("fake_vllm")

    @app.get("/health")
    def health() -> Response:
        return jsonify({})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response("vllm_fake_requests_total 3.0\n", mimetype="text/plain")

    @app.get("/v1/models")
    def models() -> Response:
        return jsonify({"object": "list", "data": [
            {"id": "phi-4", "object": "model", "created": 0, "owned_by": "vllm"}]})

    @app.post("/v1/<path:kind>")
    def complete(kind: str) -> Response:
        body = request.get_json()
        seen.append({"path": kind, **body})
        chat = kind == "chat/completions"
        if chat and body.get("model") == "base-model":  # vLLM's answer for a model with no template
            return Response(json.dumps({"error": {
                "message": "As of transformers v4.44, default chat template is no longer allowed,"
                           " so you must provide a chat template if the tokenizer does not define"
                           " one.", "type": "BadRequestError", "param": None, "code": 400}}),
                status=400, mimetype="application/json")
        if body.get("model") not in (None, "phi-4", "base-model"):
            return Response(json.dumps({"error": {"message": "no such model", "type":
                            "NotFoundError", "param": None, "code": 404}}), status=404,
                            mimetype="application/json")
        if body.get("stream"):
            def gen() -> Iterator[str]:
                for word in ["Pa", "ris"]:
                    delta = {"delta": {"content": word}} if chat else {"text": word}
                    yield "data: " + json.dumps({"id": "x", "object": "chunk", "created": 0,
                                                 "model": "phi-4", "choices": [
                                                     {"index": 0, "finish_reason": None,
                                                      **delta}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            return Response(gen(), mimetype="text/event-stream")
        choice = ({"message": {"role": "assistant", "content": "Paris"}} if chat
                  else {"text": "Paris"})
        return jsonify({"id": "x", "object": "chat.completion" if chat else "text_completion",
                        "created": 0, "model": "phi-4", "choices": [
                            {"index": 0, "finish_reason": "stop", **choice}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                  "total_tokens": 4}})

    return app


class _Loop:
    """An event loop in a thread that serves aiohttp apps on loopback ports: uvloop's, as
    the front's `serve` runs it."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def serve(self, app: web.Application) -> str:
        async def start() -> tuple[web.AppRunner, int]:
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
            await runner.setup()
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            await web.SockSite(runner, sock).start()
            return runner, int(sock.getsockname()[1])

        runner, port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.runners.append(runner)
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        for runner in self.runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@contextmanager
def serving() -> Iterator[_Loop]:
    loop = _Loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="module")
def front() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with _serve(fake_vllm(seen)) as upstream, serving() as loop:
        yield loop.serve(create_front_app(upstream)), seen


def test_chat_prompt_goes_through_the_chat_template(front: tuple[str, list[dict[str, Any]]]
                                                    ) -> None:
    url, seen = front
    resp = requests.post(url + "/chat", json={
        "prompt": "capital of France?",
        "generate_kwargs": {"max_new_tokens": 9, "top_k": 5, "do_sample": False}}, timeout=30)
    assert resp.json() == {"Result": "Paris"}
    assert seen[-1] == {"path": "chat/completions",
                        "messages": [{"role": "user", "content": "capital of France?"}],
                        "max_tokens": 9, "top_k": 5, "temperature": 0.0, "top_p": 1.0}


def test_chat_prompt_of_a_model_without_template_becomes_a_completion_call(
        front: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = front
    resp = requests.post(url + "/chat", json={
        "model": "base-model", "prompt": "capital of France?",
        "generate_kwargs": {"max_new_tokens": 9, "do_sample": False}}, timeout=30)
    assert resp.json() == {"Result": "Paris"}
    assert [c["path"] for c in seen[-2:]] == ["chat/completions", "completions"]
    assert seen[-1] == {"path": "completions", "model": "base-model",
                        "prompt": "capital of France?", "max_tokens": 9,
                        "temperature": 0.0, "top_p": 1.0}


def test_chat_messages_become_a_chat_completion_call(front: tuple[str, list[dict[str, Any]]]
                                                     ) -> None:
    url, seen = front
    msgs = [{"role": "user", "content": "hi"}]
    resp = requests.post(url + "/chat", json={"messages": msgs}, timeout=30)
    assert resp.json() == {"Result": "Paris"}
    assert seen[-1]["path"] == "chat/completions"
    assert seen[-1]["messages"] == msgs


def test_chat_validates_before_calling_vllm(front: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = front
    count = len(seen)
    resp = requests.post(url + "/chat", json={"prompt": "x",
                                              "generate_kwargs": {"top_p": 2}}, timeout=30)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "top_p"
    bad = requests.post(url + "/chat", data=b"{not json", timeout=30)
    assert bad.status_code == 400
    assert "not valid JSON" in bad.json()["error"]["message"]
    assert len(seen) == count


def test_openai_client_goes_through_the_proxy_streaming_and_not(
        front: tuple[str, list[dict[str, Any]]]) -> None:
    url, _ = front
    with openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                       timeout=30) as client:
        assert [m.id for m in client.models.list()] == ["phi-4"]
        msgs: Any = [{"role": "user", "content": "hi"}]
        whole = client.chat.completions.create(model="phi-4", messages=msgs)
        assert whole.choices[0].message.content == "Paris"
        stream = client.chat.completions.create(model="phi-4", messages=msgs, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "Paris"
        text = client.completions.create(model="phi-4", prompt="a", stream=True)
        assert "".join(c.choices[0].text for c in text) == "Paris"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="other", messages=msgs)


def test_the_answer_passes_byte_for_byte(front: tuple[str, list[dict[str, Any]]]) -> None:
    url, _ = front
    upstream = requests.get(url + "/v1/models", timeout=30)
    raw = requests.get(url + "/v1/models", timeout=30, headers={"Accept-Encoding": "identity"})
    assert upstream.content == raw.content
    assert raw.headers["Content-Length"] == str(len(raw.content))  # kept, not re-chunked


def test_health_and_metrics_include_the_upstream(front: tuple[str, list[dict[str, Any]]]
                                                 ) -> None:
    url, _ = front
    assert requests.get(url + "/health", timeout=30).status_code == 200
    requests.get(url + "/v1/models", timeout=30)
    metrics = requests.get(url + "/metrics", timeout=30).text
    assert "vllm_fake_requests_total 3.0" in metrics
    assert 'kaito_front_request_duration_seconds_count{endpoint="/v1/models",status="200"}' \
        in metrics
    assert "kaito_front_requests_in_flight 0.0" in metrics


KEY = "s3cret-key"


def _refused(resp: requests.Response) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"]["code"] == "invalid_api_key"
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_with_an_api_key_every_model_call_needs_the_bearer_token() -> None:
    seen: list[dict[str, Any]] = []
    with _serve(fake_vllm(seen)) as upstream, serving() as loop:
        url = loop.serve(create_front_app(upstream, api_key=KEY))
        assert requests.get(url + "/health", timeout=30).status_code == 200  # probes stay open
        assert "vllm_fake_requests_total" in requests.get(url + "/metrics", timeout=30).text
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                        {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"bearer {KEY}"}):
            _refused(requests.post(url + "/chat", json={"prompt": "hi"}, headers=headers,
                                   timeout=30))
            _refused(requests.post(url + "/v1/completions", json={"prompt": "a"},
                                   headers=headers, timeout=30))
            _refused(requests.get(url + "/v1/models", headers=headers, timeout=30))
        # a header that is not UTF-8 is refused like any wrong key, not an error
        _refused(requests.get(url + "/v1/models", headers={"Authorization": b"Bearer \xff"},
                              timeout=30))
        assert seen == []  # nothing refused reached vLLM
        good = {"Authorization": f"Bearer {KEY}"}
        chat = requests.post(url + "/chat", json={"prompt": "hi"}, headers=good, timeout=30)
        assert chat.json() == {"Result": "Paris"}
        with openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0,
                           timeout=30) as client:
            text = client.completions.create(model="phi-4", prompt="a", stream=True)
            assert "".join(c.choices[0].text for c in text) == "Paris"
        with openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0,
                           timeout=30) as wrong, pytest.raises(openai.AuthenticationError):
            wrong.models.list()
    with pytest.raises(ValueError, match="empty"):
        create_front_app("http://127.0.0.1:9", api_key="")


def test_vllm_compile_caches_go_to_the_node_cache_unless_the_pod_says_otherwise() -> None:
    env = vllm_environment({"KAITO_WEIGHTS_CACHE": "/var/cache/kaito",
                            "TRITON_CACHE_DIR": "/mine", "PATH": "/bin"})
    assert env == {"KAITO_WEIGHTS_CACHE": "/var/cache/kaito", "PATH": "/bin",
                   "VLLM_CACHE_ROOT": "/var/cache/kaito/compile/vllm",
                   "TORCHINDUCTOR_CACHE_DIR": "/var/cache/kaito/compile/torchinductor",
                   "TRITON_CACHE_DIR": "/mine"}
    assert vllm_environment({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_an_unreachable_or_dead_upstream_is_a_503() -> None:
    with serving() as loop:
        url = loop.serve(create_front_app("http://127.0.0.1:9"))
        assert requests.get(url + "/health", timeout=30).status_code == 503
        resp = requests.post(url + "/v1/completions", json={"prompt": "a"}, timeout=30)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "upstream_unavailable"
        chat = requests.post(url + "/chat", json={"prompt": "a"}, timeout=30)
        assert chat.status_code == 503
        dead = loop.serve(create_front_app("http://127.0.0.1:9", alive=lambda: False))
        assert requests.get(dead + "/health", timeout=30).status_code == 503


# --- concurrency and back-pressure, against an aiohttp stand-in --------------------------------

STREAMS = 260  # more than vLLM batches by default (256)


class _Upstream:
    """A stand-in vLLM. `hold` streams wait until STREAMS are open at once; `flood` streams
    write 256 KiB chunks until their reader goes away (counted in `aborted`); any other
    request is answered at once."""

    def __init__(self) -> None:
        self.open = 0
        self.all_in = asyncio.Event()
        self.floods = 0
        self.aborted = 0

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        mode = body.get("mode")
        if mode not in ("hold", "flood"):
            return web.json_response({"choices": [{"index": 0, "text": "ok"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if mode == "flood":
            self.floods += 1
            chunk = b"data: " + b"x" * 2**18 + b"\n\n"
            try:
                for _ in range(4096):  # 1 GiB: far more than any buffer on the way
                    await resp.write(chunk)
            except (ConnectionError, asyncio.CancelledError):
                self.aborted += 1
                raise
            return resp
        self.open += 1
        if self.open >= STREAMS:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), 60)
        for i in range(3):
            await resp.write(f"data: {i}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def chat(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"choices": [{"index": 0, "message": {
            "role": "assistant", "content": "ok"}}]})


async def _stream(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.post(url + "/v1/completions", json={"mode": "hold"}) as resp:
        assert resp.status == 200
        return await resp.read()


async def _many(url: str, count: int) -> list[bytes]:
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:
        return list(await asyncio.gather(*(_stream(session, url) for _ in range(count))))


def test_the_front_holds_more_streams_open_at_once_than_vllm_batches() -> None:
    """The stand-in answers no stream until STREAMS are open together: any limit in the
    front below that (threads, a connection pool) would leave them all waiting."""
    up = _Upstream()
    with serving() as loop:
        upstream = loop.serve(up.app())
        url = loop.serve(create_front_app(upstream))
        answers = asyncio.run(_many(url, STREAMS))
    assert up.open == STREAMS
    assert answers == [b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: [DONE]\n\n"] * STREAMS


@contextmanager
def _stalled_readers(url: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` clients that ask for a flood and never read a byte of it."""
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"mode": "flood"}).encode()
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def test_a_client_that_stops_reading_holds_up_no_other_stream_and_its_end_frees_vllm(
) -> None:
    up = _Upstream()
    with serving() as loop:
        upstream = loop.serve(up.app())
        url = loop.serve(create_front_app(upstream))
        with _stalled_readers(url, 20):  # more than the old front's 16 threads
            deadline = time.monotonic() + 30
            while up.floods < 20:
                assert time.monotonic() < deadline, f"only {up.floods} of 20 floods started"
                time.sleep(0.05)
            fast = requests.post(url + "/chat", json={"prompt": "hi"}, timeout=30)
            assert fast.json() == {"Result": "ok"}
            metrics = requests.get(url + "/metrics", timeout=30).text
            assert "kaito_front_requests_in_flight 20.0" in metrics
        deadline = time.monotonic() + 30
        while up.aborted < 20:  # each closed client drops its upstream connection
            assert time.monotonic() < deadline, f"only {up.aborted} of 20 floods were aborted"
            time.sleep(0.05)


# --- the real command line, with a stand-in `vllm` module ---------------------------------------

FAKE_SERVER = '''
import argparse, http.server, json, os
p = argparse.ArgumentParser()
p.add_argument("--model"); p.add_argument("--host"); p.add_argument("--port", type=int)
a, _ = p.parse_known_args()
with open(os.environ["FAKE_VLLM_PID"], "w") as f:
    f.write(str(os.getpid()))
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_GET(self):
        body = b"{}"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
        text = a.model + "|" + os.environ.get("VLLM_CACHE_ROOT", "")
        for event in [{"choices": [{"index": 0, "text": text}]}, "[DONE]"]:
            data = ("data: " + (event if isinstance(event, str) else json.dumps(event))
                    + "\\n\\n").encode()
            self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(data), data)); self.wfile.flush()
        self.wfile.write(b"0\\r\\n\\r\\n")
http.server.ThreadingHTTPServer((a.host, a.port), H).serve_forever()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pod_command(tmp_path: Path, *front_args: str, stderr: int | None = None) -> tuple[
        str, subprocess.Popen[bytes], Path]:
    """Start `python -m runtime.serving.vllm_front` as the pod runs it, over a stand-in vLLM."""
    module = tmp_path / "lib" / "vllm" / "entrypoints" / "cli"  # `vllm serve`'s module
    module.mkdir(parents=True, exist_ok=True)
    for folder in (module.parents[1], module.parent, module):
        (folder / "__init__.py").write_text("")
    (module / "main.py").write_text(FAKE_SERVER)
    pid_file = tmp_path / "vllm.pid"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'lib'}{os.pathsep}{repo}",
           "FAKE_VLLM_PID": str(pid_file), "KAITO_WEIGHTS_CACHE": str(tmp_path / "cache")}
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime.serving.vllm_front", "--host",
                             "127.0.0.1", "--port", str(port), "--vllm-port", str(_free_port()),
                             *front_args, "--", "--model", "smollm2-135m-instruct"], env=env,
                            stderr=stderr)
    return f"http://127.0.0.1:{port}", proc, pid_file


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    url, proc, pid_file = _pod_command(tmp_path)
    try:
        yield url, proc, pid_file
    finally:
        _end(proc)


def _healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"the front exited with {proc.returncode}"
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass  # the front is still importing
        assert time.monotonic() < deadline, "the front never became healthy"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_pod_command_streams_through_and_says_when_vllm_died(
        pod: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    url, proc, pid_file = pod
    _healthy(url, proc)
    with openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                       timeout=30) as client:
        text = client.completions.create(model="m", prompt="a", stream=True)
        # vLLM got the model and keeps its compile caches on the node cache volume
        cache = pid_file.parent / "cache" / "compile" / "vllm"
        assert "".join(c.choices[0].text for c in text) == f"smollm2-135m-instruct|{cache}"
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # at first vLLM's port may just be closed: 503 unreachable, then this
        resp = requests.get(url + "/health", timeout=5)
        if resp.status_code == 503 and resp.json()["error"]["message"] == "vLLM exited":
            break
        assert resp.status_code in (200, 503), resp.text
        assert time.monotonic() < deadline, f"/health never said vLLM exited: {resp.text}"
        time.sleep(0.05)


def test_stopping_the_pod_command_stops_vllm(
        pod: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    url, proc, pid_file = pod
    _healthy(url, proc)
    child = int(pid_file.read_text())
    assert _alive(child)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not _alive(child)



def test_the_pod_command_reads_the_api_key_file_and_refuses_an_empty_one(tmp_path: Path
                                                                         ) -> None:
    for content in ("", " \n"):
        (tmp_path / "empty-key").write_text(content)
        url, proc, pid_file = _pod_command(tmp_path, "--api-key-file",
                                           str(tmp_path / "empty-key"), stderr=subprocess.PIPE)
        try:
            assert proc.wait(timeout=60) == 2
            assert proc.stderr is not None
            assert b"is empty" in proc.stderr.read()
            assert not pid_file.exists()  # it stopped before starting vLLM
        finally:
            _end(proc)
    url, proc, pid_file = _pod_command(tmp_path, "--api-key-file", str(tmp_path / "missing"))
    try:
        assert proc.wait(timeout=60) == 2
        assert not pid_file.exists()
    finally:
        _end(proc)
    (tmp_path / "api-key").write_text(KEY + "\n")  # as a Secret's file often ends
    url, proc, pid_file = _pod_command(tmp_path, "--api-key-file", str(tmp_path / "api-key"))
    try:
        _healthy(url, proc)  # /health needs no key
        _refused(requests.post(url + "/v1/completions", json={"prompt": "a"}, timeout=30))
        with openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0,
                           timeout=30) as client:
            text = client.completions.create(model="m", prompt="a", stream=True)
            assert "".join(c.choices[0].text for c in text).startswith("smollm2-135m-instruct|")
    finally:
        _end(proc)
