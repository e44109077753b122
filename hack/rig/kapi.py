"""Path-based verbs for the rig over the project's one raw JSON client (reconciler.kube).

Why: the rig writes plain JSON objects (nodes, pod status, CRDs) by path, with every patch
type explicit (the generated typed APIs send a dict body as a JSON patch unless told
otherwise). The transport, TLS setup and error decoding are reconciler.kube's; this module
only adds the verbs the rig speaks and keeps no call log.

It must not: retry, cache, or turn an error answer into a value; every non-2xx answer
raises KubeApiError (reconciler.kube.KubeError) with the server's status, reason and message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient

from reconciler.kube import Kube as JsonClient
from reconciler.kube import KubeError as KubeApiError

__all__ = ["PATCH_TYPES", "Kube", "KubeApiError", "Obj"]

Obj = dict[str, Any]
PATCH_TYPES = {"json": "application/json-patch+json", "merge": "application/merge-patch+json",
               "strategic": "application/strategic-merge-patch+json"}


class Kube:
    """Requests against one API server, through a configured kubernetes ApiClient."""

    def __init__(self, api: ApiClient, *, timeout: float = 30.0) -> None:
        self.api = api
        self.timeout = timeout
        self._client = JsonClient(api, timeout=timeout, record=False)

    def request(self, method: str, path: str, body: Any = None, *,
                query: Mapping[str, str] | None = None,
                content_type: str = "application/json") -> Obj:
        return dict(self._client.request(method, path, query=query, body=body,
                                         content_type=content_type))

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
