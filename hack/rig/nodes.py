"""Simulated GPU nodes: Node objects shaped like those Karpenter or AKS register.

Why: the rig has no kubelets, yet the scheduler, the reconciler and the demo need Nodes
with GPU capacity, instance-type / zone labels, taints and a Ready condition. The status
is written through the status subresource as a kubelet would.

It must not: touch nodes it was not asked about, or leave the apiserver's
`node.kubernetes.io/not-ready` taint on a node it reports Ready (nobody else removes it
here: the node-lifecycle controller is off).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client import ApiClient

from rig.kapi import Kube, KubeApiError

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
# Per-GPU memory (MiB) by product-name fragment, first match wins, as GPU feature
# discovery labels it; anything unknown gets DEFAULT_GPU_MEMORY.
DEFAULT_GPU_MEMORY_MIB = {"A100-SXM4-80GB": 81920, "A100-PCIE-80GB": 81920,
                          "A100-PCIE-40GB": 40960, "A100-SXM4-40GB": 40960, "V100": 16384,
                          "T4": 15360, "A10": 23028, "H100": 81559, "L4": 23034}
DEFAULT_GPU_MEMORY = 16384


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _gpu_memory(product: str) -> int:
    for fragment, mib in DEFAULT_GPU_MEMORY_MIB.items():
        if fragment in product:
            return mib
    return DEFAULT_GPU_MEMORY


def node_body(name: str, *, instance_type: str, gpus: int, gpu_product: str,
              gpu_memory_mib: int | None, labels: Mapping[str, str] | None,
              taints: Sequence[Mapping[str, str]] | None, zone: str) -> dict[str, Any]:
    """The Node object (without status) as a cloud provisioner would register it."""
    all_labels = {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": instance_type, "topology.kubernetes.io/zone": zone,
        "nvidia.com/gpu.product": gpu_product, "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.memory": str(gpu_memory_mib or _gpu_memory(gpu_product)),
        **(labels or {}),
    }
    if gpus == 0:
        for key in ("nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory"):
            all_labels.pop(key)
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": all_labels},
            "spec": {"providerID": f"sim://{zone}/{name}",
                     "taints": [dict(t) for t in taints or []]}}


def _conditions(ready: bool) -> list[dict[str, str]]:
    now = _now()
    ready_cond = {"type": "Ready", "status": "True" if ready else "False",
                  "reason": "KubeletReady" if ready else "KubeletNotReady",
                  "message": "simulated kubelet is posting ready status" if ready
                  else "simulated kubelet reports not ready",
                  "lastHeartbeatTime": now, "lastTransitionTime": now}
    pressure = [{"type": t, "status": "False", "reason": f"KubeletHasNo{t}", "message": "ok",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
                for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]
    return [*pressure, ready_cond]


def create_gpu_node(api: ApiClient, name: str, *, instance_type: str, gpus: int,
                    gpu_product: str = "NVIDIA-A100-SXM4-80GB", gpu_memory_mib: int | None = None,
                    labels: Mapping[str, str] | None = None,
                    taints: Sequence[Mapping[str, str]] | None = None, ready: bool = True,
                    zone: str = "eastus-1", cpu: str = "24", memory: str = "220Gi",
                    pods: str = "110") -> dict[str, Any]:
    """Create the Node, write its status (capacity, allocatable, conditions); return it."""
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    kube = Kube(api)
    kube.create("/api/v1/nodes", node_body(
        name, instance_type=instance_type, gpus=gpus, gpu_product=gpu_product,
        gpu_memory_mib=gpu_memory_mib, labels=labels, taints=taints, zone=zone))
    capacity = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "500Gi"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    status = {"capacity": capacity, "allocatable": dict(capacity),
              "conditions": _conditions(ready),
              "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                            {"type": "Hostname", "address": name}],
              "nodeInfo": _node_info()}
    kube.patch(f"/api/v1/nodes/{name}/status", {"status": status}, "strategic")
    if ready:
        _set_not_ready_taint(kube, name, present=False)
    return kube.get(f"/api/v1/nodes/{name}")


def _node_info() -> dict[str, str]:
    return {"architecture": "amd64", "operatingSystem": "linux", "osImage": "simulated",
            "kernelVersion": "simulated", "kubeletVersion": "v1.20.2-sim",
            "kubeProxyVersion": "v1.20.2-sim", "containerRuntimeVersion": "sim://1",
            "machineID": "sim", "systemUUID": "sim", "bootID": "sim"}


def _set_not_ready_taint(kube: Kube, name: str, *, present: bool) -> None:
    """Add or remove the not-ready taint (the apiserver adds it at create); retry on 409."""
    for _ in range(5):
        node = kube.get(f"/api/v1/nodes/{name}")
        taints = node["spec"].get("taints") or []
        keep = [t for t in taints if t["key"] != NOT_READY_TAINT]
        want = [*keep, {"key": NOT_READY_TAINT, "effect": "NoSchedule"}] if present else keep
        if [t["key"] for t in want] == [t["key"] for t in taints]:
            return
        node["spec"]["taints"] = want
        try:
            kube.replace(f"/api/v1/nodes/{name}", node)
            return
        except KubeApiError as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"could not update {NOT_READY_TAINT} on node {name}: kept conflicting")


def set_node_ready(api: ApiClient, name: str, ready: bool) -> None:
    """Flip the Ready condition (and the not-ready taint with it), as a kubelet would."""
    kube = Kube(api)
    kube.patch(f"/api/v1/nodes/{name}/status", {"status": {"conditions": _conditions(ready)}},
               "strategic")
    _set_not_ready_taint(kube, name, present=not ready)


def delete_node(api: ApiClient, name: str) -> bool:
    """Delete the Node; False when it was already gone."""
    return Kube(api).delete(f"/api/v1/nodes/{name}", missing_ok=True)
