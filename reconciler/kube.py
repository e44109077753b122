"""A thin, counting JSON client over the kubernetes package's ApiClient.

The reconciler speaks to the API server with raw dicts (desired objects are plain JSON),
so it sends requests through `ApiClient.call_api` itself instead of the generated typed
APIs. Every request is recorded (method, path, verb, resource) so that a pass can report
its API calls and writes, the tests can assert "a converged pass makes zero writes", and
the RBAC test can derive the verbs the code really uses.

It must not retry, cache or hide errors: callers decide what NotFound / AlreadyExists /
Conflict mean for them. Nothing here knows about Workspaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes.client import ApiClient

Obj = dict[str, Any]

# kind -> (plural, namespaced). The reconciler only touches these kinds.
RESOURCES: Mapping[str, tuple[str, bool]] = {
    "Workspace": ("workspaces", True),
    "Node": ("nodes", False),
    "NodeClaim": ("nodeclaims", False),
    "Deployment": ("deployments", True),
    "StatefulSet": ("statefulsets", True),
    "Service": ("services", True),
    "Job": ("jobs", True),
    "ConfigMap": ("configmaps", True),
    "Pod": ("pods", True),
    "Event": ("events", True),
    "Secret": ("secrets", True),
    "Lease": ("leases", True),
    "NetworkPolicy": ("networkpolicies", True),
}

WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})
# Accept header for a GET of an object's metadata alone (meta.k8s.io/v1
# PartialObjectMetadata): how the pass checks a Secret exists without receiving its data.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
LIST_PAGE = 500  # items per LIST page (the apiserver's own suggestion for clients)


class KubeError(Exception):
    """A non-2xx answer (status 0 for transport errors) with the server's own message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def immutable(self) -> bool:
        """422 because a field cannot change in place: the API's own words say so (a
        Deployment's selector, a StatefulSet's spec outside replicas/template/...)."""
        text = self.message.lower()
        return self.status == 422 and (
            "field is immutable" in text
            or "updates to statefulset spec for fields other than" in text)


@dataclass(frozen=True, slots=True)
class Call:
    """One request as RBAC sees it: verb on group/resource (subresource), plus its status."""

    method: str
    path: str
    verb: str
    group: str
    resource: str
    subresource: str
    status: int


@dataclass(slots=True)
class CallLog:
    calls: list[Call] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.calls)

    @property
    def writes(self) -> int:
        return sum(1 for c in self.calls if c.verb in WRITE_VERBS)

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> list[Call]:
        return self.calls[mark:]


def resource_path(
    api_version: str, kind: str, namespace: str | None = None, name: str | None = None
) -> str:
    """The REST path of a collection or an object; raises KeyError for a kind we do not use."""
    plural, namespaced = RESOURCES[kind]
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name, safe='')}"
    return base


def _verb(method: str, path: str, query: Mapping[str, str]) -> str:
    if method == "GET":
        if query.get("watch") in ("1", "true"):
            return "watch"
        return "get" if _is_object_path(path) else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


def _is_object_path(path: str) -> bool:
    parts = [p for p in path.split("/") if p]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if rest and rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    return len(rest) >= 2


def _classify(path: str) -> tuple[str, str, str]:
    parts = [p for p in path.split("/") if p]
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if rest and rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0] if rest else ""
    sub = rest[2] if len(rest) >= 3 else ""
    return group, resource, sub


class Kube:
    """JSON requests with a call log. `api` is a configured kubernetes ApiClient.

    The project's one raw JSON client (the rig's `rig.kapi` wraps it with path-based verbs);
    `record=False` keeps no call log, for long-running callers that never read it."""

    def __init__(self, api: ApiClient, *, timeout: float = 30.0, record: bool = True) -> None:
        self.api = api
        self.log = CallLog()
        self.timeout = timeout
        self.record = record

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        return self._exchange(method, path, query, body, content_type, "application/json")

    def get_metadata(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj:
        """GET one object's metadata alone (a PartialObjectMetadata): for a Secret, whether
        it exists and who owns it, without its data ever reaching this process."""
        path = resource_path(api_version, kind, namespace, name)
        return self._exchange("GET", path, None, None, "application/json", METADATA_ONLY)

    def get_text(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """GET a plain-text subresource (a container's log), decoded as UTF-8 with
        replacement: a log is whatever the container wrote. The apiserver refuses an Accept
        of text/plain for pods/log (406); it sends text/plain to */*, as kubectl asks."""
        data = self._raw("GET", path, query, None, "application/json", "*/*")
        return data.decode("utf-8", "replace")

    def _exchange(self, method: str, path: str, query: Mapping[str, str] | None, body: Any,
                  content_type: str, accept: str) -> Obj:
        data = self._raw(method, path, query, body, content_type, accept)
        return json.loads(data) if data else {}

    def _raw(self, method: str, path: str, query: Mapping[str, str] | None, body: Any,
             content_type: str, accept: str) -> bytes:
        q = dict(query or {})
        url_path = path + (f"?{urlencode(q)}" if q else "")
        status, data = self._send(method, url_path, body, content_type, accept)
        if self.record:
            group, resource, sub = _classify(path)
            self.log.calls.append(
                Call(method, path, _verb(method, path, q), group, resource, sub, status)
            )
        if status >= 300 or status == 0:
            raise _error(status, data)
        return data

    def _send(self, method: str, url_path: str, body: Any, ctype: str,
              accept: str = "application/json") -> tuple[int, bytes]:
        headers = {"Accept": accept, "Content-Type": ctype}
        ser = self.api.param_serialize(
            method=method, resource_path=url_path, header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        try:
            resp = self.api.call_api(*ser, _request_timeout=self.timeout)
            return int(resp.status), resp.read() or b""  # type: ignore[no-untyped-call]
        except Exception as exc:  # transport errors (reset, timeout, TLS) come as many types
            return 0, json.dumps({"reason": type(exc).__name__, "message": str(exc)}).encode()

    def stream(self, path: str, query: Mapping[str, str]) -> Iterator[Obj]:
        """A watch: yields decoded events until the server closes the stream."""
        q = {**query, "watch": "1"}
        url_path = f"{path}?{urlencode(q)}"
        ser = self.api.param_serialize(
            method="GET", resource_path=url_path, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            resp = self.api.call_api(*ser, _request_timeout=(10, 330))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _transport_error(exc) from exc
        group, resource, sub = _classify(path)
        self.log.calls.append(Call("GET", path, "watch", group, resource, sub, int(resp.status)))
        if resp.status >= 300:
            raise _error(int(resp.status), resp.read() or b"")  # type: ignore[no-untyped-call]
        buf = b""
        chunks = resp.response.stream(4096)
        while True:
            try:  # a stream cut mid-way (apiserver restart, proxy reset) is a transport error
                chunk = next(chunks, None)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise _transport_error(exc) from exc
            if chunk is None:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)

    # Convenience verbs -------------------------------------------------------------

    def list_items(
        self, api_version: str, kind: str, namespace: str | None = None, selector: str = "",
        *, limit: int = LIST_PAGE,
    ) -> list[Obj]:
        """Every item, `limit` per page (following `metadata.continue`), so a big cluster
        never answers one huge LIST. A continue token that expired (410) restarts once."""
        path = resource_path(api_version, kind, namespace)
        items: list[Obj] = []
        token, restarted = "", False
        while True:
            query = {"limit": str(limit)}
            if selector:
                query["labelSelector"] = selector
            if token:
                query["continue"] = token
            try:
                out = self.request("GET", path, query=query)
            except KubeError as exc:
                if exc.status != 410 or not token or restarted:
                    raise
                items, token, restarted = [], "", True  # a consistent list from the start
                continue
            items += out.get("items") or []
            token = str((out.get("metadata") or {}).get("continue") or "")
            if not token:
                break
        for item in items:  # LIST drops apiVersion/kind from items; put them back
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def create(self, obj: Obj) -> Obj:
        md = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], md.get("namespace"))
        return self.request("POST", path, body=obj)

    def merge_patch(self, obj: Obj, patch: Obj, subresource: str = "") -> Obj:
        md = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], md.get("namespace"), md["name"])
        if subresource:
            path += f"/{subresource}"
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def json_patch(self, obj: Obj, ops: list[Obj]) -> Obj:
        md = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], md.get("namespace"), md["name"])
        return self.request("PATCH", path, body=ops, content_type="application/json-patch+json")

    def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> None:
        path = resource_path(api_version, kind, namespace, name)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        self.request("DELETE", path, body=body)


def _transport_error(exc: BaseException) -> KubeError:
    """Status 0, as `_send` reports a reset, timeout or TLS failure."""
    return KubeError(0, type(exc).__name__, str(exc))


def _error(status: int, data: bytes) -> KubeError:
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = {"message": data[:500].decode("utf-8", "replace")}
    if not isinstance(body, dict):
        body = {"message": str(body)}
    return KubeError(status, str(body.get("reason") or ""), str(body.get("message") or ""))
