"""The thin front of GPU pods: Kaito's /chat, /health and /metrics before vLLM's OpenAI server.

Why: on GPU presets vLLM serves the OpenAI API, but the seed's user calls `POST /chat`
on port 5000. This module starts vLLM on an internal loopback port with the arguments
presets/commands.py generated and serves, on 5000: /chat (translated to vLLM's OpenAI
calls), /health (vLLM's), /metrics (ours plus vLLM's) and /v1/* proxied byte for byte,
streaming included.
What it must not do: import torch or vLLM (vLLM runs as a child process), or interpret
OpenAI bodies it proxies.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import requests
from flask import Flask, Response, jsonify, request
from gunicorn.app.base import BaseApplication
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from presets.runtime import ray_cluster
from presets.runtime.protocol import GenRequest, RequestError, parse_kaito_chat

_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                          "upgrade", "proxy-authorization", "proxy-authenticate", "host",
                          "content-length", "content-encoding"})


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
    body["prompt"] = req.prompt
    return "/v1/completions", body


def _result_text(path: str, data: Any) -> str:
    choice = data["choices"][0]
    if path == "/v1/chat/completions":
        return str(choice["message"]["content"] or "")
    return str(choice["text"])


class _Front:
    """State shared by the front's views: the upstream URL, an HTTP session, metrics."""

    def __init__(self, upstream: str, alive: Callable[[], bool] | None, timeout_s: float):
        self.upstream, self.alive, self.timeout_s = upstream, alive, timeout_s
        self.session = requests.Session()
        self.registry = CollectorRegistry()
        self.latency = Histogram("kaito_front_request_duration_seconds", "Front latency",
                                 ["endpoint", "status"], registry=self.registry)
        self.upstream_errors = Counter("kaito_front_upstream_errors", "Upstream unreachable",
                                       registry=self.registry)

    def unreachable(self, exc: Exception) -> RequestError:
        self.upstream_errors.inc()
        return RequestError(f"the model server is not reachable: {type(exc).__name__}",
                            status=503, type_="server_error", code="upstream_unavailable")

    def health(self) -> Response:
        if self.alive is not None and not self.alive():
            raise RequestError("vLLM exited", status=503, type_="server_error")
        try:
            up = self.session.get(self.upstream + "/health", timeout=5)
        except requests.RequestException as exc:
            raise self.unreachable(exc) from exc
        resp = jsonify({"status": "ok" if up.ok else "loading", "upstream": up.status_code})
        resp.status_code = 200 if up.ok else 503
        return resp

    def metrics(self) -> Response:
        text = generate_latest(self.registry)
        try:
            up = self.session.get(self.upstream + "/metrics", timeout=5)
            if up.ok:
                text += up.content
        except requests.RequestException:
            self.upstream_errors.inc()
        return Response(text, mimetype="text/plain; version=0.0.4; charset=utf-8")

    def chat(self) -> Response:
        started = time.monotonic()
        body = request.get_json(silent=True, force=True)
        if body is None:
            raise RequestError("the request body is not valid JSON")
        path, payload = chat_to_openai(parse_kaito_chat(body))
        try:
            up = self.session.post(self.upstream + path, json=payload, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise self.unreachable(exc) from exc
        self.latency.labels("/chat", str(up.status_code)).observe(time.monotonic() - started)
        if not up.ok:
            return Response(up.content, status=up.status_code,
                            mimetype=up.headers.get("content-type", "application/json"))
        return jsonify({"Result": _result_text(path, up.json())})


def create_front_app(upstream: str, *, alive: Callable[[], bool] | None = None,
                     timeout_s: float = 600.0) -> Flask:
    """A front for the OpenAI server at `upstream` (e.g. http://127.0.0.1:5001)."""
    app = Flask("kaito_vllm_front")
    front = _Front(upstream, alive, timeout_s)

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Response:
        resp = jsonify(exc.body())
        resp.status_code = exc.status
        return resp

    app.get("/health")(front.health)
    app.get("/metrics")(front.metrics)
    app.post("/chat")(front.chat)

    @app.route("/v1/<path:rest>", methods=["GET", "POST", "DELETE"])
    def proxy(rest: str) -> Response:
        return _proxy(front, "/v1/" + rest)

    return app


def _proxy(front: _Front, path: str) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    try:
        up = front.session.request(request.method, front.upstream + path,
                             params=list(request.args.items(multi=True)),
                             data=request.get_data(), headers=headers, stream=True,
                             timeout=front.timeout_s)
    except requests.RequestException as exc:
        raise front.unreachable(exc) from exc

    def body() -> Iterator[bytes]:
        try:
            yield from up.iter_content(chunk_size=None)
        finally:
            up.close()

    out_headers = [(k, v) for k, v in up.headers.items() if k.lower() not in _HOP_HEADERS]
    return Response(body(), status=up.status_code, headers=out_headers, direct_passthrough=True)


def build_parser() -> argparse.ArgumentParser:
    """The front's own flags, the part of the command line before `--`."""
    p = argparse.ArgumentParser(prog="vllm_front", description=__doc__)
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--vllm-port", type=int, default=5001)
    p.add_argument("--http-threads", type=int, default=16)
    return p


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    return build_parser().parse_args(argv[:split]), argv[split + 1:]


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, port: int, threads: int) -> None:
        self.app, self.port, self.threads = app, port, threads
        super().__init__()

    def load_config(self) -> None:
        for key, value in {"bind": f"0.0.0.0:{self.port}", "workers": 1,
                           "worker_class": "gthread", "threads": self.threads,
                           "timeout": 0, "accesslog": "-", "errorlog": "-"}.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.app


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


def main(argv: Sequence[str] | None = None) -> int:
    ns, vllm_args = _parse(sys.argv[1:] if argv is None else argv)
    if not vllm_args:
        print("vllm_front: give the vLLM arguments after `--`", file=sys.stderr)
        return 2
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
                app = ray_cluster.create_worker_app(lambda: ray_cluster.pid_alive(worker.pid))
                _Gunicorn(app, ns.port, ns.http_threads).run()
            finally:
                _stop(worker)
            return 0
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *vllm_args,
           "--host", "127.0.0.1", "--port", str(ns.vllm_port)]
    child = subprocess.Popen(cmd)  # noqa: S603 - our own argv, no shell
    procs = [p for p in (child, ray) if p is not None]
    app = create_front_app(f"http://127.0.0.1:{ns.vllm_port}",
                           alive=lambda: all(ray_cluster.pid_alive(p.pid) for p in procs))
    try:
        _Gunicorn(app, ns.port, ns.http_threads).run()
    finally:
        _stop(child)
        _stop(ray)
    return 0


if __name__ == "__main__":
    sys.exit(main())
