"""SimKarpenter: plays Karpenter (Kaito's gpu-provisioner) for the tests and the demo.

The rig has no cloud, so something must answer the NodeClaims the reconciler creates. For
each NodeClaim labelled `karpenter.sh/nodepool=kaito` it registers a Node shaped as a GPU node
of the requested instance type (GPU count and memory from the shipped catalog), carrying the
NodeClaim's labels and its `sku=gpu:NoSchedule` taint, then writes the NodeClaim status as
Karpenter does (Launched / Registered / Initialized / Ready, nodeName, providerID). An
instance type can be set to fail: the NodeClaim then gets Launched=False, reason
LaunchFailed, with Azure's quota wording. When a NodeClaim goes away its Node goes too.

Given `real_nodes` (rig.realnode.RealNodes), the Node is a REAL node: a kubelet with its own
dockerd, registered with the claim's labels and taints, advertising the SKU's GPU count,
pulling only the preloaded images its Workspace names (runtime images are GBs each); the
claim turns Registered/Initialized/Ready once that node is Ready, and deleting the
claim stops the kubelet and dockerd and removes the node's containers. A real node that
cannot start fails the claim (LaunchFailed) with the rig's reason.

It must not touch NodeClaims of other node pools, nor Nodes it did not create.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from crds.workspace import API_VERSION, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from presets.catalog import Catalog, load_catalog
from rig.kapi import KubeApiError
from rig.nodes import create_gpu_node, node_body
from rig.realnode import RealNodeError, RealNodes

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "karpenter.sh", "v1", "nodeclaims"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
MADE_BY = "rig.kaito-py/sim-karpenter"  # annotation on the Nodes we made: the claim's name
INSTANCE_TYPE_KEY = "node.kubernetes.io/instance-type"


def quota_message(instance_type: str, family: str = "standardNCSv3Family") -> str:
    """Azure's wording for a cores-quota failure, as the Azure provider reports it."""
    return (
        f"creating instance, creating VM for {instance_type}: Operation could not be completed "
        f"as it results in exceeding approved {family} Cores quota. Additional details - "
        "Deployment Model: Resource Manager, Location: eastus, Current Limit: 0, Current Usage: "
        "0, Additional Required: 6, (Minimum) New Limit Required: 6. Submit a request for Quota "
        "increase at https://aka.ms/ProdportalCRP by specifying parameters listed in the "
        "'Details' section for deployment to succeed."
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _instance_type(claim: Mapping[str, Any]) -> str:
    for req in (claim.get("spec") or {}).get("requirements") or []:
        if req.get("key") == INSTANCE_TYPE_KEY and req.get("values"):
            return str(req["values"][0])
    return ""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class SimKarpenter:
    """`step()` answers every pending NodeClaim once; `start()` does it in a polling thread."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        catalog: Catalog | None = None,
        failures: Mapping[str, str] | None = None,
        nodepool: str = "kaito",
        real_nodes: RealNodes | None = None,
    ) -> None:
        self.api = api
        self.catalog = catalog or load_catalog()
        self.failures: dict[str, str] = dict(failures or {})
        self.nodepool = nodepool
        self.real_nodes = real_nodes
        self.errors: list[str] = []
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fail(self, instance_type: str, message: str | None = None) -> None:
        """Make launches of this instance type fail (Launched=False, LaunchFailed)."""
        self.failures[instance_type] = message or quota_message(instance_type)

    # One pass ----------------------------------------------------------------------

    def step(self) -> list[str]:
        """Answer pending NodeClaims and remove Nodes whose NodeClaim is gone; returns actions."""
        selector = f"{NODEPOOL_LABEL}={self.nodepool}"
        listed: Any = self.custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, label_selector=selector
        )
        claims: list[dict[str, Any]] = listed["items"]
        actions: list[str] = []
        for claim in claims:
            action = self._answer(claim)
            if action:
                actions.append(action)
        actions += self._collect_nodes({c["metadata"]["name"] for c in claims})
        return actions

    def _answer(self, claim: dict[str, Any]) -> str:
        name = claim["metadata"]["name"]
        status = claim.get("status") or {}
        if claim["metadata"].get("deletionTimestamp") or status.get("nodeName"):
            return ""
        itype = _instance_type(claim)
        if itype in self.failures:
            if any(c.get("type") == "Launched" for c in status.get("conditions") or []):
                return ""
            self._set_status(claim, {"conditions": self._failed(self.failures[itype])})
            return f"failed {name}"
        node_name = f"aks-{name}"
        if self.real_nodes is not None:
            try:
                self._start_real_node(claim, node_name, itype)
            except RealNodeError as exc:
                self.errors.append(str(exc))
                log.error("real node for %s failed: %s", name, exc)
                first = str(exc).splitlines()[0]
                self._set_status(claim, {"conditions": self._failed(first)})
                return f"failed {name}: {first}"
        else:
            self._create_node(claim, node_name, itype)
        self._set_status(
            claim,
            {
                "nodeName": node_name,
                "providerID": f"sim-karpenter:///{node_name}",
                "conditions": self._launched(),
            },
        )
        return f"launched {name} -> {node_name}"

    def _create_node(self, claim: Mapping[str, Any], node_name: str, itype: str) -> None:
        spec = self.catalog.instance_type(itype)
        gpus = spec.gpu_count if spec else 1
        mib = int(spec.gpu_memory_gib * 1024) if spec and spec.gpu_count else None
        labels = dict(claim["metadata"].get("labels") or {})
        labels[INSTANCE_TYPE_KEY] = itype
        try:
            create_gpu_node(
                self.api,
                node_name,
                instance_type=itype,
                gpus=gpus,
                gpu_product=(spec.gpu_model if spec and spec.gpu_model else "NVIDIA-A100"),
                gpu_memory_mib=mib,
                labels=labels,
                taints=[dict(t) for t in (claim.get("spec") or {}).get("taints") or []],
            )
        except (ApiException, KubeApiError) as exc:
            if exc.status != 409:  # already registered by an earlier step
                raise
        self.core.patch_node(
            node_name, {"metadata": {"annotations": {MADE_BY: claim["metadata"]["name"]}}}
        )

    def _labels_taints(self, claim: Mapping[str, Any], node_name: str,
                       itype: str) -> tuple[dict[str, str], list[dict[str, str]], int]:
        spec = self.catalog.instance_type(itype)
        gpus = spec.gpu_count if spec else 1
        mib = int(spec.gpu_memory_gib * 1024) if spec and spec.gpu_count else None
        labels = dict(claim["metadata"].get("labels") or {})
        labels[INSTANCE_TYPE_KEY] = itype
        body = node_body(node_name, instance_type=itype, gpus=gpus,
                         gpu_product=(spec.gpu_model if spec and spec.gpu_model else "NVIDIA-A100"),
                         gpu_memory_mib=mib, labels=labels, taints=None, zone="eastus-1")
        taints = [dict(t) for t in (claim.get("spec") or {}).get("taints") or []]
        return dict(body["metadata"]["labels"]), taints, gpus

    def _start_real_node(self, claim: Mapping[str, Any], node_name: str, itype: str) -> None:
        """Start a real kubelet node for the claim (blocks until Ready, some seconds)."""
        assert self.real_nodes is not None
        if node_name in self.real_nodes.names():
            return
        labels, taints, gpus = self._labels_taints(claim, node_name, itype)
        times = self.real_nodes.start(node_name, labels=labels, taints=taints, gpus=gpus,
                                      owner=claim["metadata"]["name"],
                                      images=self._workspace_strings(claim))
        log.info("real node %s Ready in %.1fs", node_name, times.ready)
        self.core.patch_node(
            node_name, {"metadata": {"annotations": {MADE_BY: claim["metadata"]["name"]}}}
        )

    def _workspace_strings(self, claim: Mapping[str, Any]) -> set[str] | None:
        """Every string in the claim's Workspace, its pods' images among them, so that the
        node pulls only the preloaded images its Workspace runs; None (pull them all) when
        the Workspace cannot be read."""
        labels = claim["metadata"].get("labels") or {}
        name, namespace = labels.get(LABEL_WORKSPACE), labels.get(LABEL_WORKSPACE_NAMESPACE)
        if not name or not namespace:
            return None
        group, version = API_VERSION.split("/")
        try:
            ws = self.custom.get_namespaced_custom_object(group, version, namespace,
                                                          "workspaces", name)
        except ApiException as exc:
            log.warning("workspace %s/%s of %s not read (%s): its node pulls every image",
                        namespace, name, claim["metadata"]["name"], exc.status)
            return None
        return set(_strings(ws))

    def _set_status(self, claim: Mapping[str, Any], status: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, claim["metadata"]["name"], {"status": status}
        )

    @staticmethod
    def _launched() -> list[dict[str, str]]:
        now = _now()
        return [
            # a non-empty message: the Python client sends "" as null, which the CRD rejects
            {
                "type": t,
                "status": "True",
                "reason": t,
                "message": f"{t} by SimKarpenter",
                "lastTransitionTime": now,
            }
            for t in ("Launched", "Registered", "Initialized", "Ready")
        ]

    @staticmethod
    def _failed(message: str) -> list[dict[str, str]]:
        now = _now()
        return [
            {
                "type": "Launched",
                "status": "False",
                "reason": "LaunchFailed",
                "message": message,
                "lastTransitionTime": now,
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "NotLaunched",
                "message": "Node not launched",
                "lastTransitionTime": now,
            },
        ]

    def _collect_nodes(self, live_claims: set[str]) -> list[str]:
        actions = []
        raw: Any = self.api.sanitize_for_serialization(self.core.list_node())  # type: ignore[no-untyped-call]
        nodes: list[dict[str, Any]] = raw.get("items") or []
        for node in nodes:
            name = str(node["metadata"]["name"])
            owner = (node["metadata"].get("annotations") or {}).get(MADE_BY)
            if owner and owner not in live_claims:
                if self.real_nodes is not None and name in self.real_nodes.names():
                    self.real_nodes.stop(name)  # the kubelet first: it would re-register
                try:
                    self.core.delete_node(name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                actions.append(f"removed node {name}")
        if self.real_nodes is not None:  # started, but never annotated (a failed start)
            for name in self.real_nodes.names():
                rec = self.real_nodes.record(name) or {}
                if rec.get("owner") and rec["owner"] not in live_claims:
                    self.real_nodes.stop(name, delete_node=True)
                    actions.append(f"removed real node {name}")
        return actions

    # Background --------------------------------------------------------------------

    def start(self, interval: float = 0.2) -> None:
        if self._thread is not None:
            raise RuntimeError("SimKarpenter already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except (ApiException, KubeApiError) as exc:  # transient: try again next tick
                log.warning("SimKarpenter step failed: %s", exc)
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
