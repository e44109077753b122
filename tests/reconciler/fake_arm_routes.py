"""The HTTP side of the fake ARM endpoint (tests/reconciler/fake_arm.py): routes, bodies, headers.

Kept apart so the model and its script stay readable. It speaks only the agent-pool routes
the provisioner uses (list, get, put, delete, and the async-operation status URL) and must
not grow beyond them.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tests.reconciler.fake_arm import FakeArm

TOKEN = "fake-arm-token"
API = "api-version=2026-08-01"


@dataclass
class Reply:
    """A scripted answer: status, ARM error body and extra headers."""

    status: int
    code: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Pool:
    body: dict[str, Any]
    state: str
    reads_left: int
    fail: tuple[str, str] | None = None


class Handler(BaseHTTPRequestHandler):
    arm: FakeArm
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # the tests assert on arm.requests instead of stderr noise

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # Plumbing ----------------------------------------------------------------------

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, {"error": {"code": code, "message": message}}, headers)

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        arm = self.arm
        with arm.lock:
            arm.requests.append((method, path))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._error(401, "InvalidAuthenticationToken", "The access token is invalid.")
                return
            if arm.once[method]:
                reply = arm.once[method].popleft()
                self._error(reply.status, reply.code, reply.message, reply.headers)
                return
            self._route(method, path, raw)

    def _route(self, method: str, path: str, raw: bytes) -> None:
        if "/operations/" in path:
            self._operation(path.rsplit("/", 1)[1])
            return
        base, sep, rest = path.partition("/agentPools")
        if not sep or "/managedClusters/" not in base:
            self._error(404, "InvalidResourceType", f"no route for {path}")
            return
        name = rest.strip("/")
        if not name and method == "GET":
            self._list()
        elif name and method == "GET":
            self._get(name)
        elif name and method == "PUT":
            self._put(base, name, raw)
        elif name and method == "DELETE":
            self._delete(base, name)
        else:
            self._error(405, "MethodNotAllowed", f"{method} {path}")

    def _op_headers(self, base: str, name: str) -> dict[str, str]:
        op = str(uuid.uuid4())
        self.arm.operations[op] = name
        sub = base.split("/resourceGroups/")[0]
        host = f"https://{self.headers.get('Host')}"
        url = f"{host}{sub}/providers/Microsoft.ContainerService/locations/eastus/operations/{op}"
        return {"Azure-AsyncOperation": f"{url}?{API}", "Retry-After": "1"}

    # Routes ------------------------------------------------------------------------

    def _list(self) -> None:
        for name in list(self.arm.pools):
            self.arm.tick(name)
        self._send(200, {"value": [self.arm.view(n) for n in sorted(self.arm.pools)]})

    def _get(self, name: str) -> None:
        self.arm.tick(name)
        if name not in self.arm.pools:
            self._error(404, "NotFound", f"Agent pool '{name}' not found.")
            return
        self._send(200, self.arm.view(name))

    def _put(self, base: str, name: str, raw: bytes) -> None:
        arm = self.arm
        try:
            body = json.loads(raw)
            props = body["properties"]
            vm_size = str(props["vmSize"])
        except (ValueError, KeyError, TypeError):
            self._error(400, "InvalidParameter", "The request body must be an agent pool.")
            return
        if vm_size in arm.put_errors:
            reply = arm.put_errors[vm_size]
            self._error(reply.status, reply.code, reply.message, reply.headers)
            return
        existing = arm.pools.get(name)
        if existing is not None and existing.state not in ("Succeeded", "Failed"):
            msg = f"Operation is not allowed because agent pool '{name}' is {existing.state}."
            self._error(409, "OperationNotAllowed", msg)
            return
        body["id"] = f"{base}/agentPools/{name}"
        body["name"] = name
        body["type"] = "Microsoft.ContainerService/managedClusters/agentPools"
        if existing is None:
            created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            body["systemData"] = {"createdAt": created}
        else:
            body["systemData"] = existing.body.get("systemData", {})
        state = "Creating" if existing is None else "Scaling"
        arm.pools[name] = _new_pool(
            body, state, arm.polls_to_finish, arm.async_failures.get(vm_size)
        )
        self._send(201 if existing is None else 200, arm.view(name), self._op_headers(base, name))

    def _delete(self, base: str, name: str) -> None:
        arm = self.arm
        pool = arm.pools.get(name)
        if pool is None:
            if arm.missing_delete_status == 404:
                self._error(404, "NotFound", f"Agent pool '{name}' not found.")
            else:
                self._send(arm.missing_delete_status)
            return
        if pool.state == "Creating" and arm.conflict_delete_while_creating:
            msg = (
                "Operation is not allowed because there's an in progress create node pool "
                "operation."
            )
            self._error(409, "OperationNotAllowed", msg)
            return
        if pool.state != "Deleting":
            pool.state, pool.reads_left, pool.fail = "Deleting", arm.polls_to_finish, None
        headers = self._op_headers(base, name)
        headers["Location"] = headers["Azure-AsyncOperation"]
        self._send(202, None, headers)

    def _operation(self, op: str) -> None:
        name = self.arm.operations.get(op)
        if name is None:
            self._error(404, "NotFound", f"operation {op} not found")
            return
        self.arm.tick(name)
        pool = self.arm.pools.get(name)
        if pool is None or pool.state == "Succeeded":
            self._send(200, {"name": op, "status": "Succeeded"})
        elif pool.state == "Failed" and pool.fail is not None:
            error = {"code": pool.fail[0], "message": pool.fail[1]}
            self._send(200, {"name": op, "status": "Failed", "error": error})
        else:
            self._send(200, {"name": op, "status": "InProgress"})


def _new_pool(body: dict[str, Any], state: str, reads: int, fail: tuple[str, str] | None) -> Pool:
    props = body["properties"]
    props.pop("provisioningState", None)
    props.pop("status", None)
    return Pool(body=body, state=state, reads_left=max(1, reads), fail=fail)
