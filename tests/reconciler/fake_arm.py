"""A local fake of Azure Resource Manager's AKS agent-pool API, served over real HTTPS on loopback.

The AKS provisioner is tested with the real `azure-mgmt-containerservice` client pointed at
this server (the SDK refuses bearer tokens over plain HTTP, so we serve TLS with a
self-signed certificate that the client trusts). It answers as ARM does: PUT gives 201 with
Azure-AsyncOperation and the pool in `Creating`, which turns `Succeeded` (or `Failed` with
`status.provisioningError`) after a few reads; DELETE gives 202 and the pool disappears after a
few reads, also while it is still Creating (AKS aborts the create); errors come as
`{"error": {"code", "message"}}`; 429 carries Retry-After. Tests script failures per VM size or
as one-off responses. It models only what the provisioner uses and must not grow into a
general ARM emulator.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.reconciler.fake_arm_routes import TOKEN, Handler, Pool, Reply

__all__ = ["TOKEN", "FakeArm", "Pool", "Reply"]
# Azure's own wording (ARM quota and SKU errors), used by the tests' scripted failures.
QUOTA_MESSAGE = (
    "Preflight validation check for resource(s) for container service {cluster} in resource "
    "group {rg} failed. Message: Operation could not be completed as it results in exceeding "
    "approved standardNCSv3Family Cores quota. Additional details - Deployment Model: Resource "
    "Manager, Location: eastus, Current Limit: 0, Current Usage: 0, Additional Required: 6, "
    "(Minimum) New Limit Required: 6. Submit a request for Quota increase at "
    "https://aka.ms/ProdportalCRP by specifying parameters listed in the 'Details' section for "
    "deployment to succeed."
)
SKU_MESSAGE = (
    "The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: "
    "{sku}' is currently not available in location 'eastus'. Please try another size or deploy "
    "to a different location or different zone. See https://aka.ms/azureskunotavailable for "
    "details."
)


class FakeArm:
    """Holds the pools and the script; `start()` serves it on https://127.0.0.1:<port>."""

    def __init__(self, *, polls_to_finish: int = 2) -> None:
        self.polls_to_finish = polls_to_finish
        self.pools: dict[str, Pool] = {}
        self.requests: list[tuple[str, str]] = []
        self.once: dict[str, deque[Reply]] = {"GET": deque(), "PUT": deque(), "DELETE": deque()}
        self.put_errors: dict[str, Reply] = {}  # vmSize -> synchronous error on PUT
        self.async_failures: dict[str, tuple[str, str]] = {}  # vmSize -> (code, message)
        self.missing_delete_status = 204  # ARM answers 204 for a missing resource; 404 also seen
        self.conflict_delete_while_creating = False
        self.operations: dict[str, str] = {}  # operation id -> pool name
        self.lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="fake-arm-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # Lifecycle ---------------------------------------------------------------------

    def start(self) -> str:
        cert, key = _self_signed(Path(self._dir.name))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._port, "FakeArm.start() first"
        return f"https://127.0.0.1:{self._port}"

    def stop(self) -> None:
        """Stop serving (the port then refuses connections); idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def cleanup(self) -> None:
        self.stop()
        self._dir.cleanup()

    # Script ------------------------------------------------------------------------

    def reply_once(self, method: str, reply: Reply) -> None:
        self.once[method].append(reply)

    def throttle_next(self, method: str, retry_after: int) -> None:
        msg = "The request is being throttled as the limit has been reached for operation type."
        self.reply_once(
            method, Reply(429, "TooManyRequests", msg, {"Retry-After": str(retry_after)})
        )

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.requests if m == method)

    # Model -------------------------------------------------------------------------

    def tick(self, name: str) -> None:
        """One read of a pool: it moves one step toward the end of its operation."""
        pool = self.pools.get(name)
        if pool is None or pool.state in ("Succeeded", "Failed"):
            return
        pool.reads_left -= 1
        if pool.reads_left > 0:
            return
        if pool.state == "Deleting":
            del self.pools[name]
        elif pool.fail is not None:
            pool.state = "Failed"
            pool.body["properties"]["status"] = {
                "provisioningError": {"code": pool.fail[0], "message": pool.fail[1]}
            }
        else:
            pool.state = "Succeeded"

    def view(self, name: str) -> dict[str, Any]:
        pool = self.pools[name]
        body: dict[str, Any] = json.loads(json.dumps(pool.body))
        body["properties"]["provisioningState"] = pool.state
        return body


def _self_signed(where: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-arm")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = where / "ca.pem", where / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def _handler_for(arm: FakeArm) -> type[BaseHTTPRequestHandler]:
    return type("BoundHandler", (Handler,), {"arm": arm})
