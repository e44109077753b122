"""The thin front of GPU pods: Kaito's /chat, /health and /metrics before vLLM's OpenAI server.

Why: on GPU presets vLLM serves the OpenAI API, but the seed's user calls `POST /chat`
on port 5000. This module starts vLLM on an internal loopback port with the arguments
presets/commands.py generated and serves, on 5000: /chat (translated to vLLM's OpenAI
calls), /health (vLLM's), /metrics (ours plus vLLM's) and /v1/* proxied byte for byte,
streaming included, chunk by chunk. With --api-key-file, /chat and /v1/* need the key as
the transformers server does (app.py); /health and /metrics stay open.
Every request of the model's Service passes here, so the front is one asyncio process
(aiohttp server and client): it sets no limit of its own on concurrent requests or
upstream connections (vLLM batches hundreds of sequences and must see them all), and each
stream is its own task, so a slow reader only pauses its own upstream connection (TCP
back-pressure), never the others.
On multi-node presets (ray executor) it first forms the Ray cluster (ray_cluster.py); the
other pods of the StatefulSet serve /health only.
What it must not do: import torch or vLLM (vLLM runs as a child process), interpret the
OpenAI bodies it proxies, buffer a streamed answer, or block its event loop.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from yarl import URL

from runtime.serving import ray_cluster
from runtime.serving.protocol import GenRequest, RequestError, parse_kaito_chat
from runtime.serving.settings import DEFAULT_PORT, read_api_key
from runtime.weights import WeightsError, WeightsSettings, ensure, parse_source
from runtime.weights.cache import CACHE_ENV

# Per-hop headers (RFC 9110 7.6.1): each hop sets its own. The request's length and
# encoding are set anew from the body as read (the server may have decoded it; an
# `Expect: 100-continue` was answered here); the answer's pass unchanged (the client
# session does not decompress).
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                          "upgrade", "proxy-authorization", "proxy-authenticate", "host"})
_REQUEST_DROP = _HOP_HEADERS | {"content-length", "content-encoding", "expect"}
# The pass-through's metric label: the OpenAI endpoints by name, anything else as /v1/*
# (a label per client-chosen path would grow the registry without bound).
_KNOWN = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/embeddings",
                    "/v1/responses", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"})
MAX_BODY = 64 * 2**20  # request bodies the front accepts (long prompts, base64 images)
HEALTH_TIMEOUT_S = 5.0
# Connections the kernel may queue before the front accepts them, as uvicorn (vLLM's own
# server) allows; aiohttp's default of 128 overflowed when 256 clients connected at once,
# and each dropped SYN stalled its client for the 1 s retransmission timeout.
BACKLOG = 2048
CONNECT_TIMEOUT_S = 10.0


def chat_to_openai(req: GenRequest) -> tuple[str, dict[str, Any]]:
    """The vLLM path and body for a parsed /chat request."""
    s = req.sampling
    body: dict[str, Any] = {"temperature": s.temperature if s.do_sample else 0.0,
                            "top_p": s.top_p}
    if req.model:
        body["model"] = req.model
    tokens = s.max_new_tokens or s.max_length  # vLLM counts new tokens only
    if tokens:
        body["max_tokens"] = tokens
    if s.top_k:
        body["top_k"] = s.top_k
    if s.repetition_penalty is not None:
        body["repetition_penalty"] = s.repetition_penalty
    if s.seed is not None:
        body["seed"] = s.seed
    if req.messages is not None:
        body["messages"] = [dict(m) for m in req.messages]
        return "/v1/chat/completions", body
    if req.templated:
        # A plain /chat prompt goes through the model's chat template, as on our CPU server.
        body["messages"] = [{"role": "user", "content": req.prompt or ""}]
        return "/v1/chat/completions", body
    body["prompt"] = req.prompt
    return "/v1/completions", body


def raw_completion(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The /v1/completions form of a templated /chat prompt, for models with no chat template."""
    body = {k: v for k, v in payload.items() if k != "messages"}
    body["prompt"] = payload["messages"][0]["content"]
    return "/v1/completions", body


def lacks_chat_template(status: int, data: bytes) -> bool:
    """vLLM refuses chat completions with 400 naming the chat template when a model has none."""
    return status == 400 and b"chat template" in data.lower()


def _result_text(path: str, data: Any) -> str:
    choice = data["choices"][0]
    if path == "/v1/chat/completions":
        return str(choice["message"]["content"] or "")
    return str(choice["text"])


class ProbeQuietAccessLogger(AccessLogger):
    """The access log without /health: the kubelet probes every few seconds, and those lines
    would bury vLLM's own output (why it failed to start) in `kubectl logs`."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path != "/health":
            super().log(request, response, time)


def _error(exc: RequestError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status)


OPEN_PATHS = frozenset({"/health", "/metrics"})  # probes and scraping need no key


def _require_key(key: str) -> Middleware:
    """A middleware: every path but OPEN_PATHS needs `Authorization: Bearer <key>`, compared
    in constant time; otherwise the OpenAI-style 401 of the transformers server (app.py)."""
    expected = f"Bearer {key}".encode()

    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        # surrogatepass: a header that is not UTF-8 (aiohttp keeps its bytes as surrogates)
        # becomes bytes that match no key, instead of an error
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogatepass")
        if hmac.compare_digest(given, expected):
            return await handler(request)
        resp = _error(RequestError("a valid API key is required (Authorization: Bearer ...)",
                                   status=401, code="invalid_api_key"))
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    return require_key


class _Front:
    """The upstream URL, the one HTTP client session (no connection limit), and metrics."""

    def __init__(self, upstream: str, alive: Callable[[], bool] | None, timeout_s: float):
        self.upstream, self.alive, self.timeout_s = URL(upstream), alive, timeout_s
        self._session: aiohttp.ClientSession | None = None
        self.registry = CollectorRegistry()
        self.latency = Histogram("kaito_front_request_duration_seconds",
                                 "Front latency until the last byte, by endpoint and status",
                                 ["endpoint", "status"], registry=self.registry)
        self.upstream_errors = Counter("kaito_front_upstream_errors", "Upstream unreachable",
                                       registry=self.registry)
        self.in_flight = Gauge("kaito_front_requests_in_flight",
                               "Requests the front is passing to vLLM now",
                               registry=self.registry)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the front's client session is not open (app not started)")
        return self._session

    async def open(self, _app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
        # No read timeout on the pass-through: it would re-arm a timer for every chunk of
        # every stream. A client that gives up cancels its handler, which drops the
        # upstream connection; /chat (one answer, no stream) has its own bound.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        # No cookie jar: the proxy keeps no client state from one request to the next (the
        # default jar would also look for cookies to add on every call).
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                              auto_decompress=False,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              skip_auto_headers=(
                                                  "User-Agent", "Accept", "Accept-Encoding"))
        try:
            yield
        finally:
            await self._session.close()
            self._session = None

    def unreachable(self, exc: BaseException) -> RequestError:
        self.upstream_errors.inc()
        return RequestError(f"the model server is not reachable: {type(exc).__name__}",
                            status=503, type_="server_error", code="upstream_unavailable")

    async def health(self, _request: web.Request) -> web.Response:
        if self.alive is not None and not self.alive():
            return _error(RequestError("vLLM exited", status=503, type_="server_error"))
        try:
            async with self.session.get(self.upstream / "health", timeout=aiohttp.ClientTimeout(
                    total=HEALTH_TIMEOUT_S)) as up:
                await up.read()
                ok = up.status == 200
                return web.json_response({"status": "ok" if ok else "loading",
                                          "upstream": up.status}, status=200 if ok else 503)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(self.unreachable(exc))

    async def metrics(self, _request: web.Request) -> web.Response:
        text = generate_latest(self.registry)
        try:
            async with self.session.get(self.upstream / "metrics", timeout=aiohttp.ClientTimeout(
                    total=HEALTH_TIMEOUT_S)) as up:
                if up.status == 200:
                    text += await up.read()
        except (aiohttp.ClientError, TimeoutError):
            self.upstream_errors.inc()  # vLLM's part is missing; ours still answers
        return web.Response(body=text, headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def chat(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        try:
            body = json.loads(await request.read())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _error(RequestError("the request body is not valid JSON"))
        try:
            req = parse_kaito_chat(body)
        except RequestError as exc:
            return _error(exc)
        path, payload = chat_to_openai(req)
        self.in_flight.inc()
        try:
            status, ctype, data = await self._post(path, payload)
            if req.messages is None and req.templated and lacks_chat_template(status, data):
                path, payload = raw_completion(payload)
                status, ctype, data = await self._post(path, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(self.unreachable(exc))
        finally:
            self.in_flight.dec()
        self.latency.labels("/chat", str(status)).observe(time.monotonic() - started)
        if status != 200:
            return web.Response(body=data, status=status, headers={"Content-Type": ctype})
        return web.json_response({"Result": _result_text(path, json.loads(data))})

    async def _post(self, path: str, payload: dict[str, Any]) -> tuple[int, str, bytes]:
        """One non-streamed call to vLLM: status, content type and body."""
        async with self.session.post(self.upstream.with_path(path), json=payload,
                                     timeout=aiohttp.ClientTimeout(
                                         total=None, sock_connect=CONNECT_TIMEOUT_S,
                                         sock_read=self.timeout_s)) as up:
            return up.status, up.headers.get("Content-Type", "application/json"), await up.read()

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Pass /v1/* through: the body as read, the answer chunk by chunk as it comes."""
        started = time.monotonic()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_DROP]
        target = self.upstream.join(URL(request.raw_path, encoded=True))
        body = await request.read()
        self.in_flight.inc()
        status = 503
        try:
            try:
                up = await self.session.request(request.method, target, data=body,
                                                headers=headers, allow_redirects=False)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return _error(self.unreachable(exc))
            status = up.status
            try:
                out = web.StreamResponse(status=up.status, reason=up.reason, headers=[
                    (k, v) for k, v in up.headers.items() if k.lower() not in _HOP_HEADERS])
                await out.prepare(request)
                async for chunk in up.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
            finally:
                up.close()  # an unfinished answer drops its connection: vLLM aborts it
            return out
        finally:
            self.in_flight.dec()
            label = request.path if request.path in _KNOWN else "/v1/*"
            self.latency.labels(label, str(status)).observe(time.monotonic() - started)


def create_front_app(upstream: str, *, alive: Callable[[], bool] | None = None,
                     timeout_s: float = 600.0, api_key: str | None = None) -> web.Application:
    """A front for the OpenAI server at `upstream` (e.g. http://127.0.0.1:5001); with
    `api_key`, /chat and /v1/* need it as a bearer token."""
    if api_key is not None and not api_key:
        raise ValueError("the API key is empty")
    front = _Front(upstream, alive, timeout_s)
    app = web.Application(client_max_size=MAX_BODY,
                          middlewares=[_require_key(api_key)] if api_key else [])
    app.cleanup_ctx.append(front.open)
    app.router.add_get("/health", front.health)
    app.router.add_get("/metrics", front.metrics)
    app.router.add_post("/chat", front.chat)
    for method in ("GET", "POST", "DELETE"):
        app.router.add_route(method, "/v1/{rest:.*}", front.proxy)
    return app


def build_parser() -> argparse.ArgumentParser:
    """The front's own flags, the part of the command line before `--`."""
    p = argparse.ArgumentParser(prog="vllm_front", description=__doc__)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--vllm-port", type=int, default=5001)
    p.add_argument("--host", default="0.0.0.0",  # noqa: S104 - the pod's port for its Service
                   help="address to serve on (default: all, the pod's port)")
    p.add_argument("--api-key-file", type=Path, default=None,
                   help="require `Authorization: Bearer <the file's content>` on /chat and "
                        "/v1/* (default: off)")
    return p


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    return build_parser().parse_args(argv[:split]), argv[split + 1:]


def serve(app: web.Application, host: str, port: int) -> None:
    """Serve `app` until SIGTERM/SIGINT; a client that goes away cancels its handler
    (which drops its upstream connection, so vLLM stops generating for it). The loop is
    uvloop's: every streamed token passes the loop twice (read from vLLM, written to the
    client), and libuv's loop and transports take 5-12 % off the front's CPU per token
    (hack/bench-front.py's stand-in at 256 streams, the same front on asyncio's loop)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    web.run_app(app, host=host, port=port, print=None, handler_cancellation=True,
                access_log_class=ProbeQuietAccessLogger,
                access_log_format='%a "%r" %s %b %Tf', backlog=BACKLOG,
                loop=uvloop.new_event_loop())


def _start_ray(vllm_args: list[str]) -> tuple[subprocess.Popen[bytes], bool]:
    """Start this pod's Ray process; on the head, wait for every node. Returns (ray, is_head)."""
    env = os.environ
    leader, port, wait_s = ray_cluster.settings(env)
    ordinal = ray_cluster.pod_ordinal(env, socket.gethostname())
    ray = subprocess.Popen(ray_cluster.ray_start_argv(ordinal, leader, port))  # noqa: S603
    if ordinal != 0:
        return ray, False
    try:
        ray_cluster.wait_for_nodes(ray_cluster.expected_nodes(vllm_args),
                                   lambda: ray_cluster.run_status(port),
                                   lambda: ray.poll() is None, wait_s)
    except BaseException:
        _stop(ray)
        raise
    return ray, True


def _stop(child: subprocess.Popen[bytes] | None) -> None:
    if child is not None and child.poll() is None:
        child.terminate()
        child.wait(timeout=30)


def local_weights(vllm_args: list[str], environ: MutableMapping[str, str]) -> list[str]:
    """vLLM's arguments with `--model ORG/NAME [--revision R]` or `--model oci://REF` made a
    folder of the node cache (runtime.weights: fetched once per node, progress in the log),
    so vLLM itself never downloads; it then runs hub-offline. Other models pass unchanged."""
    if "--model" not in vllm_args:
        return vllm_args
    at = vllm_args.index("--model")
    revision = None
    if "--revision" in vllm_args:
        r = vllm_args.index("--revision")
        revision = vllm_args[r + 1] if r + 1 < len(vllm_args) else None
    source = parse_source(vllm_args[at + 1], revision)
    if source.route not in ("hub", "oci"):
        return vllm_args
    folder = ensure(source, WeightsSettings.from_env(environ)).path
    out = list(vllm_args)
    out[at + 1] = str(folder)
    if "--revision" in out:  # the folder IS that revision; vLLM would look it up online
        r = out.index("--revision")
        del out[r : r + 2]
    environ["HF_HUB_OFFLINE"] = "1"
    return out


# vLLM's compile caches (torch.compile graphs, Inductor kernels, Triton kernels), kept on the
# node cache volume the reconciler mounts, so a restarted pod loads them instead of compiling.
COMPILE_CACHES = {"VLLM_CACHE_ROOT": "vllm", "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
                  "TRITON_CACHE_DIR": "triton"}


def vllm_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """vLLM's environment: ours, with its compile caches under <node cache>/compile/ when the
    node cache is mounted ($KAITO_WEIGHTS_CACHE); a value the pod sets itself wins."""
    out = dict(environ)
    root = environ.get(CACHE_ENV)
    if root:
        for var, folder in COMPILE_CACHES.items():
            out.setdefault(var, str(Path(root) / "compile" / folder))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ns, vllm_args = _parse(sys.argv[1:] if argv is None else argv)
    if not vllm_args:
        print("vllm_front: give the vLLM arguments after `--`", file=sys.stderr)
        return 2
    try:  # read once, before anything starts: an empty or unreadable key file stops the pod
        api_key = None if ns.api_key_file is None else read_api_key(ns.api_key_file)
    except (OSError, ValueError) as exc:
        print(f"vllm_front: {exc}", file=sys.stderr)
        return 2
    try:
        vllm_args = local_weights(vllm_args, os.environ)
    except WeightsError as exc:
        print(f"vllm_front: {exc}", file=sys.stderr)
        return 1
    ray: subprocess.Popen[bytes] | None = None
    if ray_cluster.uses_ray(vllm_args):
        try:
            ray, is_head = _start_ray(vllm_args)
        except (ValueError, RuntimeError, OSError) as exc:
            print(f"vllm_front: {exc}", file=sys.stderr)
            return 1
        if not is_head:
            worker = ray
            try:
                serve(ray_cluster.create_worker_app(lambda: worker.poll() is None), ns.host,
                      ns.port)
            finally:
                _stop(worker)
            return 0
    # `vllm serve` (the module behind the `vllm` console script, in this interpreter): the
    # supported entry point; vllm.entrypoints.openai.api_server is deprecated since 0.3x.
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", *vllm_args,
           "--host", "127.0.0.1", "--port", str(ns.vllm_port)]
    child = subprocess.Popen(cmd, env=vllm_environment(os.environ))  # noqa: S603 - our argv
    procs = [p for p in (child, ray) if p is not None]
    app = create_front_app(f"http://127.0.0.1:{ns.vllm_port}",
                           alive=lambda: all(p.poll() is None for p in procs), api_key=api_key)
    try:
        serve(app, ns.host, ns.port)
    finally:
        _stop(child)
        _stop(ray)
    return 0


if __name__ == "__main__":
    sys.exit(main())
