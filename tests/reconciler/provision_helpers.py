"""Factories and an in-memory Writer for the provisioner tests (test_provision*.py).

The Writer keeps objects by (kind, name) and behaves as the Writer protocol promises:
AlreadyExists on create and NotFound on delete count as success. It is a stand-in for the
reconciler's writer in pure tests only; the cluster tests use the real API server.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.provision.base import NodeRequest, Obj

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class MemoryWriter:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Obj] = {}
        self.creates: list[str] = []
        self.deletes: list[str] = []
        self.events: list[tuple[str, str, str]] = []

    def create(self, obj: Obj) -> Obj:
        key = (obj["kind"], obj["metadata"]["name"])
        self.creates.append(key[1])
        return self.objects.setdefault(key, obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        self.deletes.append(name)
        self.objects.pop((kind, name), None)

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def nodeclaims(self) -> list[Obj]:
        return [o for (kind, _), o in self.objects.items() if kind == "NodeClaim"]


def request(**changes: Any) -> NodeRequest:
    """The phi-3 Workspace of the seed, as the reconciler would ask for its node."""
    base: dict[str, Any] = {
        "namespace": "default",
        "name": "workspace-phi-3-mini",
        "uid": "6f1f0a52-0000-4000-8000-000000000001",
        "instance_type": "Standard_NC6s_v3",
        "count": 1,
        "label_selector": {"apps": "phi-3"},
        "gpus_per_node": 1,
        "gpu_memory_gib_per_gpu": 16.0,
        "required_gpu_memory_gib": 9.0,
        "storage_gib": 87,
    }
    base.update(changes)
    return NodeRequest(**base)


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    ready: bool = True,
    gpus: int = 1,
    unschedulable: bool = False,
) -> Obj:
    status = "True" if ready else "False"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {"unschedulable": unschedulable},
        "status": {
            "capacity": {"cpu": "8", "nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": status, "reason": "KubeletReady"}],
        },
    }


def launched(claim: Obj, node_name: str) -> Obj:
    """The claim as Karpenter leaves it once its node has joined."""
    out = dict(claim)
    out["status"] = {
        "nodeName": node_name,
        "providerID": f"azure:///subscriptions/s/virtualMachines/{node_name}",
        "conditions": [
            {"type": t, "status": "True", "reason": t}
            for t in ("Launched", "Registered", "Initialized", "Ready")
        ],
    }
    return out
