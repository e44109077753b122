"""Shared pieces of the reconciler tests: Workspace factories and a pass runner."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from kubernetes import client

from presets.catalog import Catalog, load_catalog
from reconciler.kube import Kube, resource_path
from reconciler.provision.base import Provisioner
from reconciler.provision.factory import ProvisionSettings, provisioner_cache
from reconciler.reconcile import Summary, run_pass
from reconciler.settings import Settings

Obj = dict[str, Any]
API = "kaito.sh/v1beta1"
_CATALOG: list[Catalog] = []


def catalog() -> Catalog:
    if not _CATALOG:
        _CATALOG.append(load_catalog())
    return _CATALOG[0]


def phi3(name: str, label: str, *, instance_type: str = "Standard_NC6s_v3") -> Obj:
    """The seed's phi-3 Workspace (terse; the pass expands it), with a test-unique label."""
    return {
        "apiVersion": API, "kind": "Workspace",
        "metadata": {"name": name, "labels": {"argocd.argoproj.io/instance": "demo"}},
        "resource": {"instanceType": instance_type,
                     "labelSelector": {"matchLabels": {"apps": label}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def tuning_ws(name: str, label: str) -> Obj:
    """The seed's tuning example with a registry and push secret of our own."""
    return {
        "apiVersion": API, "kind": "Workspace",
        "metadata": {"name": name, "annotations": {"kaito.sh/tuning-backoff-limit": "0"}},
        "resource": {"instanceType": "Standard_NC6s_v3",
                     "labelSelector": {"matchLabels": {"app": label}}},
        "tuning": {
            "preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
            "input": {"urls": ["https://example.com/data/train.parquet"]},
            "output": {"image": "registry.example.com/adapters/phi-3:0.0.1",
                       "imagePushSecret": "push-secret"},
        },
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def provisioners(name: str = "byo") -> Callable[[str], Provisioner]:
    return provisioner_cache(ProvisionSettings(provisioner=name, gc_grace_seconds=0))


def reconcile(kube: Kube, namespace: str, provisioner: str = "byo", **kw: Any) -> Summary:
    settings = Settings(namespace=namespace, provisioner=provisioner, **kw)
    return run_pass(kube, settings, catalog(), provisioners(provisioner))


def create_ws(api: client.ApiClient, namespace: str, body: Obj) -> Obj:
    custom = client.CustomObjectsApi(api)
    out: Any = custom.create_namespaced_custom_object("kaito.sh", "v1beta1", namespace,
                                                      "workspaces", body)
    return dict(out)


def get_ws(api: client.ApiClient, namespace: str, name: str) -> Obj:
    custom = client.CustomObjectsApi(api)
    out: Any = custom.get_namespaced_custom_object("kaito.sh", "v1beta1", namespace,
                                                   "workspaces", name)
    return dict(out)


def get_obj(kube: Kube, api_version: str, kind: str, namespace: str, name: str) -> Obj:
    return kube.request("GET", resource_path(api_version, kind, namespace, name))


def conditions(ws: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}


def wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def resource_versions(kube: Kube, namespace: str) -> dict[str, str]:
    """kind/name -> resourceVersion of the Workspaces and every owned child in `namespace`."""
    out: dict[str, str] = {}
    for api, kind, sel in ((API, "Workspace", ""), ("apps/v1", "Deployment", "kaito.sh/workspace"),
                           ("v1", "Service", "kaito.sh/workspace"),
                           ("v1", "ConfigMap", "kaito.sh/workspace"),
                           ("batch/v1", "Job", "kaito.sh/workspace")):
        for obj in kube.list_items(api, kind, namespace, sel):
            out[f"{kind}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return out
