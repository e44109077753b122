"""Benchmark the webhook over TLS with gunicorn: p50/p99 latency and requests/s for /mutate and
/validate, next to a bare Flask endpoint served the same way in the same run.

Why: the apiserver calls the webhook on every Workspace write with a timeout; this shows what
a request costs and where the time goes (TLS + HTTP + gunicorn, Flask, our core). It is not a
test: it prints a table and ratios (medians of --runs runs). The webhook and the bare server
run with exactly the connection settings the shipped Deployment gives `kaito webhook serve`
(--workers, --threads, --read-timeout, --keepalive, read from
manifests/base/webhook/deployment.yaml so they cannot drift, and printed; --workers/--threads
here override those two for an experiment, and the header then says so). Bounded: a
fixed number of requests over keep-alive connections from one client process (threads),
servers stopped at the end.
Must not: run as part of the test suite or leave a server running.

A last phase sends /validate on new connections while --slow-clients connections hold on
(silent, or half a request line after the handshake): what a caller waits then.

    .venv/bin/python hack/bench-webhook.py [--requests 3000] [--concurrency 4] [--runs 5]
        [--slow-clients 16] [--slow-requests 50]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rig.procs import free_port

# The same seed Workspace and AdmissionReview the webhook tests send.
from rig.reviews import PHI3, review

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENT = REPO / "manifests" / "base" / "webhook" / "deployment.yaml"


SHIPPED_FLAGS = ("workers", "threads", "read-timeout", "keepalive")


def shipped_settings(path: Path = DEPLOYMENT) -> dict[str, str]:
    """--workers/--threads/--read-timeout/--keepalive of `kaito webhook serve` in the Deployment."""
    import yaml

    for doc in yaml.safe_load_all(path.read_text()):
        for c in ((doc or {}).get("spec", {}).get("template", {}).get("spec", {})
                  .get("containers") or []):
            if c.get("command", [])[-1:] == ["serve"]:
                flags = dict(a.removeprefix("--").split("=", 1) for a in c.get("args", [])
                             if a.startswith("--") and "=" in a)
                missing = [f"--{f}" for f in SHIPPED_FLAGS if f not in flags]
                if missing:
                    raise SystemExit(f"{path}: `kaito webhook serve` lacks {', '.join(missing)}")
                return {f: flags[f] for f in SHIPPED_FLAGS}
    raise SystemExit(f"{path}: no `kaito webhook serve` container")


def serve_flags(settings: dict[str, str]) -> list[str]:
    return [f"--{name}={value}" for name, value in settings.items()]


def bare_app() -> Any:
    """The baseline: parse the same JSON body and answer a fixed JSON, nothing else."""
    from flask import Flask, Response, request

    app = Flask("bare")

    @app.post("/bare")
    def bare() -> Response:
        json.loads(request.get_data())
        return Response('{"ok": true}', mimetype="application/json")

    return app


def serve_bare(port: int, cert_dir: Path, settings: dict[str, str]) -> None:
    """Run the bare app under gunicorn with the webhook's TLS and connection settings."""
    from webhook.serve import ServeOptions, _Gunicorn, gunicorn_options
    from webhook.tls import CertReloader

    opts = ServeOptions(
        host="127.0.0.1",
        port=port,
        cert_dir=cert_dir,
        workers=int(settings["workers"]),
        threads=int(settings["threads"]),
        read_timeout_s=float(settings["read-timeout"]),
        keepalive_s=int(settings["keepalive"]),
        log_level="warning",
    )

    class Bare(_Gunicorn):
        def load(self) -> Any:
            return bare_app()

    reloader = CertReloader(cert_dir, read_timeout_s=opts.read_timeout_s)
    options = gunicorn_options(opts, reloader)
    options.pop("child_exit", None)  # the webhook's metrics files; the bare app has none
    Bare(options).run()


def wait_ready(port: int, ca: Path, proc: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            context = ssl.create_default_context(cafile=str(ca))
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=2)
            conn.request(
                "POST", path, json.dumps(review(PHI3)), {"Content-Type": "application/json"}
            )
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on {port} not ready in 60 s")


def load(
    port: int, ca: Path, path: str, body: bytes, total: int, conns: int
) -> tuple[list[float], float]:
    """`total` POSTs spread over `conns` keep-alive connections; latencies (s) and wall time."""
    context = ssl.create_default_context(cafile=str(ca))
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per = total // conns

    def worker() -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        mine: list[float] = []
        for _ in range(per):
            start = time.perf_counter()
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - start)
            if resp.status != 200:
                errors.append(str(resp.status))
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} failed requests on {path}: {errors[:3]}")
    return latencies, wall


def pct(values: list[float], q: int) -> float:
    """The q-th percentile (1..99) in milliseconds."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def in_process_ms(n: int = 2000) -> dict[str, float]:
    """Where the time goes inside one worker: the pure core vs the Flask app around it."""
    from presets.catalog import load_catalog
    from webhook.admission import review_response
    from webhook.app import create_app
    from webhook.settings import Settings

    catalog = load_catalog()
    client = create_app(Settings(), catalog=catalog).test_client()
    out: dict[str, float] = {}
    bare = bare_app().test_client()
    for endpoint, obj in (("mutate", PHI3), ("validate", expanded())):
        sent = review(obj)
        raw = json.dumps(sent)
        start = time.perf_counter()
        for _ in range(n):
            review_response(json.loads(raw), endpoint=endpoint, catalog=catalog)  # type: ignore[arg-type]
        out[f"{endpoint} core"] = (time.perf_counter() - start) / n * 1000
        start = time.perf_counter()
        for _ in range(n):
            client.post("/" + endpoint, data=raw, content_type="application/json")
        out[f"{endpoint} flask app"] = (time.perf_counter() - start) / n * 1000
    start = time.perf_counter()
    for _ in range(n):
        bare.post("/bare", data=json.dumps(review(PHI3)), content_type="application/json")
    out["bare flask app"] = (time.perf_counter() - start) / n * 1000
    return out


def expanded() -> dict[str, Any]:
    from presets.catalog import load_catalog
    from presets.expand import expand_object

    return expand_object(PHI3, load_catalog())


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per endpoint and phase")
    parser.add_argument("--concurrency", type=int, default=4, help="keep-alive connections")
    parser.add_argument("--workers", type=int, default=None, help="default: the Deployment's")
    parser.add_argument("--threads", type=int, default=None, help="default: the Deployment's")
    parser.add_argument("--runs", type=int, default=5, help="medians of this many runs")
    parser.add_argument(
        "--slow-clients", type=int, default=16, help="held open during the last phase (0: skip)"
    )
    parser.add_argument("--slow-requests", type=int, default=50, help="requests in that phase")
    parser.add_argument(
        "--serve-bare", nargs=2, metavar=("PORT", "CERT_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    args.settings = shipped_settings()
    args.source = "manifests/base/webhook/deployment.yaml"
    for name in ("workers", "threads"):
        if getattr(args, name) is not None:
            args.settings[name] = str(getattr(args, name))
            args.source = "manifests/base/webhook/deployment.yaml, changed on the command line"
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), Path(args.serve_bare[1]), args.settings)
        return 0
    with tempfile.TemporaryDirectory(prefix="kaito-bench-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    certs = tmp / "certs"
    hook_port, bare_port = free_port(), free_port()
    py = sys.executable
    hook = start(
        [
            py,
            "-m",
            "webhook",
            "serve",
            "--bind",
            f"127.0.0.1:{hook_port}",
            "--cert-dir",
            str(certs),
            "--ip",
            "127.0.0.1",
            *serve_flags(args.settings),
            "--log-level",
            "warning",
        ],
        tmp / "hook.log",
    )
    procs = [hook]
    try:
        wait_ready(hook_port, certs / "ca.crt", hook, "/validate")
        bare = start(
            [
                py,
                __file__,
                "--serve-bare",
                str(bare_port),
                str(certs),
                *(f"--{k}={args.settings[k]}" for k in ("workers", "threads")),
            ],
            tmp / "bare.log",
        )
        procs.append(bare)
        wait_ready(bare_port, certs / "ca.crt", bare, "/bare")
        report(args, certs / "ca.crt", hook_port, bare_port)
    finally:
        for proc in procs:
            stop(proc)
    return 0


def report(args: argparse.Namespace, ca: Path, hook_port: int, bare_port: int) -> None:
    cases = [
        ("bare flask", bare_port, "/bare", review(PHI3)),
        ("/mutate", hook_port, "/mutate", review(PHI3)),
        ("/validate", hook_port, "/validate", review(expanded())),
    ]
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, *_ in cases}
    for _name, port, path, body in cases:
        load(port, ca, path, json.dumps(body).encode(), 200, 2)  # warm-up
    for _ in range(args.runs):
        for name, port, path, body in cases:
            raw = json.dumps(body).encode()
            lat, _ = load(port, ca, path, raw, args.requests, 1)
            _, wall = load(port, ca, path, raw, args.requests, args.concurrency)
            runs[name].append((pct(lat, 50), pct(lat, 99),
                               args.requests // args.concurrency * args.concurrency / wall))
    rows = {name: (statistics.median(r[0] for r in got), statistics.median(r[1] for r in got),
                   statistics.median(r[2] for r in got)) for name, got in runs.items()}
    print(f"\nkaito webhook serve {' '.join(serve_flags(args.settings))} (from {args.source})")
    print(
        f"TLS + gunicorn gthread, {args.settings['workers']} workers x "
        f"{args.settings['threads']} threads, {os.cpu_count()} CPUs shared with the client; "
        f"{args.requests} "
        f"requests per phase, median of {args.runs} runs; load average "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
    )
    print(f"latency: 1 keep-alive connection; req/s: {args.concurrency} keep-alive connections\n")
    print(f"{'endpoint':<12} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for name, (p50, p99, rps) in rows.items():
        print(f"{name:<12} {p50:>8.2f} {p99:>8.2f} {rps:>8.0f}")
    b50, b99, brps = rows["bare flask"]
    print("\nratios to bare flask (latency: x slower; throughput: fraction of bare)")
    for name in ("/mutate", "/validate"):
        p50, p99, rps = rows[name]
        print(f"{name:<12} p50 x{p50 / b50:.2f}  p99 x{p99 / b99:.2f}  req/s {rps / brps:.2f}")
    if args.slow_clients:
        slow_client_report(args, ca, hook_port)
    print("\nin-process, one thread (ms per request): where the time goes")
    for key, ms in in_process_ms().items():
        print(f"  {key:<20} {ms:6.3f}")


def slow_client_report(args: argparse.Namespace, ca: Path, port: int) -> None:
    """/validate on a new connection each, while `--slow-clients` connections hold on: half
    of them connected and silent, half with the TLS handshake done and half a request line."""
    import socket

    context = ssl.create_default_context(cafile=str(ca))
    held: list[socket.socket] = []
    try:
        for i in range(args.slow_clients):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            if i % 2:
                sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
                sock.sendall(b"POST /valid")
            held.append(sock)
        body = json.dumps(review(expanded())).encode()
        latencies = []
        for _ in range(args.slow_requests):
            start = time.perf_counter()
            load(port, ca, "/validate", body, 1, 1)
            latencies.append(time.perf_counter() - start)
    finally:
        for sock in held:
            sock.close()
    print(
        f"\n/validate, a new TLS connection each, while {args.slow_clients} slow clients hold on "
        f"(half silent, half with half a request line); {args.slow_requests} requests, ms:"
    )
    print(
        f"  p50 {pct(latencies, 50):.1f}  p99 {pct(latencies, 99):.1f}  "
        f"max {max(latencies) * 1000:.1f}  (the apiserver waits timeoutSeconds = 10 s)"
    )


if __name__ == "__main__":
    sys.exit(main())
