"""A small raw-JSON client for the rig: paths in, dicts out, explicit patch types.

Why: the rig writes plain JSON objects (nodes, pod status, CRDs) and its tests read them
back as JSON, while the generated typed APIs want model objects and send a dict body
as a JSON patch unless told otherwise. Going through `ApiClient.param_serialize` /
`call_api` keeps the kubeconfig's TLS setup and makes every patch type explicit.

It must not: retry, cache, or turn an error answer into a value; every non-2xx answer
raises KubeApiError with the server's status, reason and message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from kubernetes.client import ApiClient

Obj = dict[str, Any]
PATCH_TYPES = {"json": "application/json-patch+json", "merge": "application/merge-patch+json",
               "strategic": "application/strategic-merge-patch+json"}


class KubeApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Kube:
    """Requests against one API server, through a configured kubernetes ApiClient."""

    def __init__(self, api: ApiClient, *, timeout: float = 30.0) -> None:
        self.api = api
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *,
                query: Mapping[str, str] | None = None,
                content_type: str = "application/json") -> Obj:
        url = f"{path}?{urlencode(query)}" if query else path
        ser = self.api.param_serialize(
            method=method, resource_path=url, body=body, auth_settings=["BearerToken"],
            header_params={"Accept": "application/json", "Content-Type": content_type})
        resp = self.api.call_api(*ser, _request_timeout=self.timeout)
        data: bytes = resp.read() or b""  # type: ignore[no-untyped-call]
        status = int(resp.status)
        if status >= 300:
            raise _error(status, data)
        return dict(json.loads(data)) if data else {}

    def get(self, path: str, **query: str) -> Obj:
        return self.request("GET", path, query=query)

    def items(self, path: str, **query: str) -> list[Obj]:
        return list(self.get(path, **query).get("items") or [])

    def create(self, path: str, body: Mapping[str, Any]) -> Obj:
        return self.request("POST", path, dict(body))

    def replace(self, path: str, body: Mapping[str, Any]) -> Obj:
        return self.request("PUT", path, dict(body))

    def patch(self, path: str, body: Any, kind: str = "merge") -> Obj:
        if kind not in PATCH_TYPES:
            raise ValueError(f"patch kind {kind!r}: one of {', '.join(PATCH_TYPES)}")
        return self.request("PATCH", path, body, content_type=PATCH_TYPES[kind])

    def delete(self, path: str, *, missing_ok: bool = False, **query: str) -> bool:
        """Delete; False when missing_ok and the object was already gone."""
        try:
            self.request("DELETE", path, query=query)
        except KubeApiError as exc:
            if missing_ok and exc.status == 404:
                return False
            raise
        return True


def _error(status: int, data: bytes) -> KubeApiError:
    try:
        doc = json.loads(data)
    except ValueError:
        return KubeApiError(status, "", data.decode(errors="replace")[:500])
    if not isinstance(doc, dict):
        return KubeApiError(status, "", str(doc)[:500])
    return KubeApiError(status, str(doc.get("reason", "")), str(doc.get("message", "")))
