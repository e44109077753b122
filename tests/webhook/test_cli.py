"""`kaito webhook serve` through the real entry point: bad input exits 2 with the reason;
several workers still report one set of metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import requests

from rig.reviews import phi3, review
from tests.support.webhook import REPO, start_server, stop_server

KAITO = str(Path(sys.executable).parent / "kaito")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KAITO, "webhook", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_a_bad_bind_address_exits_2_with_the_reason(tmp_path: Path) -> None:
    proc = run("serve", "--bind", "nope", "--cert-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "--bind 'nope': expected HOST:PORT" in proc.stderr


def test_an_unbounded_read_timeout_or_keepalive_exits_2_with_the_reason(tmp_path: Path) -> None:
    for flags in (["--read-timeout", "0"], ["--read-timeout", "nan"], ["--keepalive", "0"]):
        proc = run("serve", "--bind", "127.0.0.1:1", "--cert-dir", str(tmp_path), *flags)
        assert proc.returncode == 2, flags
        assert "--read-timeout must be in (0, 60] and --keepalive at least 1" in proc.stderr
    assert not (tmp_path / "tls.crt").exists()


def test_bad_settings_exit_2_listing_every_variable(tmp_path: Path) -> None:
    env = {"KAITO_WEBHOOK_MAX_BODY_BYTES": "x", "KAITO_WEBHOOK_LOG_LEVEL": "loud"}
    proc = run("serve", "--bind", "127.0.0.1:1", "--cert-dir", str(tmp_path), env=env)
    assert proc.returncode == 2
    assert "KAITO_WEBHOOK_MAX_BODY_BYTES" in proc.stderr
    assert "KAITO_WEBHOOK_LOG_LEVEL" in proc.stderr
    assert not (tmp_path / "tls.crt").exists()


def test_two_workers_report_the_requests_of_both(tmp_path: Path) -> None:
    server = start_server(tmp_path / "certs", tmp_path / "log", "--workers", "2")
    try:
        body = json.dumps(review(phi3()))
        for _ in range(12):
            with server.session() as fresh:  # new connections spread over the workers
                resp = fresh.post(
                    server.url + "/validate",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=10,
                )
                assert resp.status_code == 200
        metrics = requests.get(server.url + "/metrics", verify=str(server.ca), timeout=10).text
    finally:
        stop_server(server)
    match = re.search(
        r'kaito_webhook_requests_total\{endpoint="validate",result="allowed"\} (\S+)', metrics
    )
    assert match is not None, metrics[:2000]
    assert float(match.group(1)) == 12.0
