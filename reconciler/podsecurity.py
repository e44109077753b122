"""Pod hardening shared by every workload pod we create (inference and tuning): pure.

Why: a Workspace's pods run a model server or a training job next to GPUs; they need no
Kubernetes API access, no privilege, no Linux capabilities and no unbounded share of the
node. This module applies, to a pod spec the builders made, the same rules the operator's
own pods follow: `automountServiceAccountToken: false`, seccomp `RuntimeDefault`, no
privilege escalation, every capability dropped, non-root (uid 65532, the project images'
user) for images this project builds, CPU and memory requests and limits derived from the
instance type (requests half the node up to 8 CPUs / 64 GiB, limits its CPUs and 90 % of
its memory), and a size limit on the in-memory /dev/shm. A user's own image (a template or
a private preset) keeps its own user: forcing one could break it.
For multi-node serving it also builds the NetworkPolicy that lets only the Workspace's own
pods reach the Ray and torch ports of its StatefulSet.
Must not: perform I/O, read settings or the clock, or change anything but security and
resources of the spec it is given.
"""

from __future__ import annotations

import math
from typing import Any

from crds.workspace import Workspace
from presets.catalog import InstanceType
from reconciler import common as c

Obj = dict[str, Any]

PROJECT_IMAGE_PREFIX = "ghcr.io/kaito-py/"  # images built from this repository (images/)
NON_ROOT_UID = 65532
REQUEST_SHARE = 0.5  # requests: half the node, so system daemons always fit beside us,
REQUEST_MAX_CPU = 8  # and never more than this guarantee (the GPUs already reserve the node)
REQUEST_MAX_MEMORY_GIB = 64
MEMORY_LIMIT_SHARE = 0.9  # limits: the node's CPUs, 90 % of its memory
SHM_SHARE = 0.25  # /dev/shm: a quarter of the node's memory
SHM_MAX_GIB = 64
SHM_DEFAULT = "8Gi"  # when the node's size is not known (bring-your-own nodes)
CONTAINER_SECURITY: Obj = {"allowPrivilegeEscalation": False, "privileged": False,
                           "capabilities": {"drop": ["ALL"]}}


def is_project_image(image: str) -> bool:
    return image.startswith(PROJECT_IMAGE_PREFIX)


def node_resources(sku: InstanceType | None) -> Obj:
    """CPU/memory requests and limits for a pod that has the node to itself; {} unknown."""
    if sku is None or sku.vcpu <= 0 or sku.memory_gib <= 0:
        return {}
    cpu_request = max(0.5, min(REQUEST_MAX_CPU, sku.vcpu * REQUEST_SHARE))
    millis = int(cpu_request * 1000)
    cpu = f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"
    memory_request = max(1, min(REQUEST_MAX_MEMORY_GIB,
                                math.floor(sku.memory_gib * REQUEST_SHARE)))
    memory_limit = max(memory_request, math.floor(sku.memory_gib * MEMORY_LIMIT_SHARE))
    return {"requests": {"cpu": cpu, "memory": f"{memory_request}Gi"},
            "limits": {"cpu": str(sku.vcpu), "memory": f"{memory_limit}Gi"}}


def shm_size(sku: InstanceType | None) -> str:
    if sku is None or sku.memory_gib <= 0:
        return SHM_DEFAULT
    return f"{max(1, min(SHM_MAX_GIB, math.floor(sku.memory_gib * SHM_SHARE)))}Gi"


def _container(container: Obj, resources: Obj) -> Obj:
    out = dict(container)
    out["securityContext"] = {**CONTAINER_SECURITY, **(out.get("securityContext") or {})}
    if resources:
        merged: Obj = {}
        have = out.get("resources") or {}
        for part in ("limits", "requests"):
            values = {**resources.get(part, {}), **(have.get(part) or {})}
            if values:
                merged[part] = values
        out["resources"] = merged
    return out


def harden_pod(spec: Obj, *, image: str, sku: InstanceType | None) -> Obj:
    """The pod spec with the rules above applied (a new dict; `spec` is not changed)."""
    out = dict(spec)
    resources = node_resources(sku)
    pod_security: Obj = {"seccompProfile": {"type": "RuntimeDefault"}}
    if is_project_image(image):
        pod_security.update(runAsNonRoot=True, runAsUser=NON_ROOT_UID, runAsGroup=NON_ROOT_UID,
                            fsGroup=NON_ROOT_UID)
    out["securityContext"] = pod_security
    out["automountServiceAccountToken"] = False
    for key in ("initContainers", "containers"):
        if key in out:
            out[key] = [_container(c, resources) for c in out[key]]
    out["volumes"] = [
        {**v, "emptyDir": {**v["emptyDir"], "sizeLimit": shm_size(sku)}}
        if v.get("name") == "dshm" and isinstance(v.get("emptyDir"), dict) else v
        for v in out.get("volumes", [])
    ]
    return out


def multi_node_network_policy(ws: Workspace) -> Obj:
    """The NetworkPolicy shipped with a multi-node StatefulSet: its pods accept the Ray head,
    Ray workers and torch traffic only from the Workspace's own pods, and from anywhere only
    the model API port (the Service's target)."""
    own = c.owner_labels(ws)
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": c.child_metadata(ws, f"{ws.metadata.name or ''}-cluster"),
        "spec": {
            "podSelector": {"matchLabels": own},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": own}}]},
                {"ports": [{"protocol": "TCP", "port": c.HTTP_PORT}]},
            ],
        },
    }
