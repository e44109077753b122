"""A TLS-terminating HTTP proxy on loopback that forwards to the real API server and
injects faults on a chosen fraction of requests: 500 before forwarding, 500 AFTER
forwarding (the write happened, the client is told it failed), 409 Conflict, and delays
longer than the client's timeout (the write happens, the client gives up). It counts
every request it sees. Test-only; binds 127.0.0.1 and never anything else.
"""

from __future__ import annotations

import datetime
import ipaddress
import random
import shutil
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config

FAULTS = ("500-before", "500-after", "409", "delay")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fault-proxy")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "proxy.crt", directory / "proxy.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class FaultProxy:
    """`fraction` of requests get one of FAULTS (seeded); `delay_s` exceeds the client timeout."""

    def __init__(self, kubeconfig: Path, *, fraction: float, read_fraction: float = 0.0,
                 seed: int = 7, delay_s: float = 2.5) -> None:
        self.fraction, self.read_fraction, self.delay_s = fraction, read_fraction, delay_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.faults: dict[str, int] = dict.fromkeys(FAULTS, 0)
        upstream = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=upstream)
        self.upstream = upstream.host
        self.pool = urllib3.PoolManager(cert_file=upstream.cert_file, key_file=upstream.key_file,
                                        ca_certs=upstream.ssl_ca_cert, cert_reqs="CERT_REQUIRED")
        self.dir = Path(tempfile.mkdtemp(prefix="faultproxy-"))
        self.cert_file, key_file = _self_signed(self.dir)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, key_file)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def api_client(self) -> client.ApiClient:
        cfg = client.Configuration(host=self.url)
        cfg.ssl_ca_cert = str(self.cert_file)
        return client.ApiClient(cfg)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)  # its certificate and key

    def pick(self, method: str) -> str:
        with self.lock:
            self.requests += 1
            if self.rng.random() >= (self.read_fraction if method == "GET" else self.fraction):
                return ""
            fault = self.rng.choice(FAULTS)
            self.faults[fault] += 1
            return fault

    def forward(self, method: str, path: str, headers: dict[str, str],
                body: bytes | None) -> tuple[int, bytes, str]:
        resp = self.pool.request(method, self.upstream + path, body=body, headers=headers,
                                 retries=False, timeout=30.0)
        return resp.status, resp.data, resp.headers.get("Content-Type", "application/json")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "accept")}
                fault = proxy.pick(self.command)
                if fault in ("500-before", "409"):
                    code = 500 if fault == "500-before" else 409
                    self._reply(code, b'{"kind":"Status","status":"Failure","reason":"'
                                + (b"InternalError" if code == 500 else b"Conflict")
                                + b'","message":"injected fault","code":%d}' % code)
                    return
                if fault == "delay":
                    time.sleep(proxy.delay_s)
                status, data, _ctype = proxy.forward(self.command, self.path, headers, body)
                if fault == "500-after":
                    status, data = 500, b'{"kind":"Status","reason":"InternalError","code":500}'
                self._reply(status, data)

            def _reply(self, status: int, data: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    return  # the client gave up (timeout): exactly the fault we wanted

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler
