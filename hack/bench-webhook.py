"""Benchmark the webhook over TLS with gunicorn: p50/p99 latency and requests/s for /mutate and
/validate, next to a bare Flask endpoint served the same way in the same run.

Why: the apiserver calls the webhook on every Workspace write with a timeout; this shows what
a request costs and where the time goes (TLS + HTTP + gunicorn, Flask, our core). It is not a
test: it prints a table and ratios (medians of --runs runs). The webhook runs with the worker
and thread counts the shipped Deployment gives it (read from
manifests/base/webhook/deployment.yaml unless --workers/--threads say otherwise). Bounded: a
fixed number of requests over keep-alive connections from one client process (threads),
servers stopped at the end.
Must not: run as part of the test suite or leave a server running.

    .venv/bin/python hack/bench-webhook.py [--requests 3000] [--concurrency 4] [--runs 5]
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


def shipped_settings(path: Path = DEPLOYMENT) -> tuple[int, int]:
    """(workers, threads) of the `kaito webhook serve` container in the shipped Deployment."""
    import yaml

    for doc in yaml.safe_load_all(path.read_text()):
        for c in ((doc or {}).get("spec", {}).get("template", {}).get("spec", {})
                  .get("containers") or []):
            if c.get("command", [])[-1:] == ["serve"]:
                flags = dict(a.removeprefix("--").split("=", 1) for a in c.get("args", [])
                             if a.startswith("--") and "=" in a)
                return int(flags["workers"]), int(flags["threads"])
    raise SystemExit(f"{path}: no `kaito webhook serve` container with --workers/--threads")


def bare_app() -> Any:
    """The baseline: parse the same JSON body and answer a fixed JSON, nothing else."""
    from flask import Flask, Response, request

    app = Flask("bare")

    @app.post("/bare")
    def bare() -> Response:
        json.loads(request.get_data())
        return Response('{"ok": true}', mimetype="application/json")

    return app


def serve_bare(port: int, cert_dir: Path, workers: int, threads: int) -> None:
    """Run the bare app under gunicorn with the webhook's TLS and worker settings."""
    from webhook.serve import ServeOptions, _Gunicorn, gunicorn_options
    from webhook.tls import CertReloader

    opts = ServeOptions(
        host="127.0.0.1",
        port=port,
        cert_dir=cert_dir,
        workers=workers,
        threads=threads,
        log_level="warning",
    )

    class Bare(_Gunicorn):
        def load(self) -> Any:
            return bare_app()

    Bare(gunicorn_options(opts, CertReloader(cert_dir))).run()


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
        "--serve-bare", nargs=2, metavar=("PORT", "CERT_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    workers, threads = shipped_settings()
    args.source = "manifests/base/webhook/deployment.yaml"
    if args.workers is not None or args.threads is not None:
        args.source = "command line"
    args.workers = workers if args.workers is None else args.workers
    args.threads = threads if args.threads is None else args.threads
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), Path(args.serve_bare[1]), args.workers, args.threads)
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
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
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
                "--workers",
                str(args.workers),
                "--threads",
                str(args.threads),
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
    print(
        f"\nTLS + gunicorn gthread, {args.workers} workers x {args.threads} threads (from "
        f"{args.source}), {os.cpu_count()} CPUs shared with the client; {args.requests} "
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
    print("\nin-process, one thread (ms per request): where the time goes")
    for key, ms in in_process_ms().items():
        print(f"  {key:<20} {ms:6.3f}")


if __name__ == "__main__":
    sys.exit(main())
