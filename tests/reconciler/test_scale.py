"""A converged pass makes the same API calls for 1, 10 and 100 Workspaces: one LIST per kind."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from reconciler.kube import Kube
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.helpers import create_ws, phi3, reconcile, unique

pytestmark = pytest.mark.cluster

# What a converged pass reads here, whatever the number of Workspaces: Workspaces, Nodes,
# NodeClaims, the four child kinds, NetworkPolicies (a Workspace with no stored count may
# run on several nodes) and Pods (no kubelet: no pod is ever Ready, so every Workspace's
# cold-start timeline stays open and its status keeps reading pods).
CONVERGED_READS = sorted(
    ("list", resource)
    for resource in ("workspaces", "nodes", "nodeclaims", "deployments", "statefulsets",
                     "services", "configmaps", "networkpolicies", "pods")
)


def _converge(kube: Kube, namespace: str) -> tuple[list[tuple[str, str]], int]:
    failures: list[str] = []
    for _ in range(30):  # the controllers create pods gradually; the status follows them
        time.sleep(1)
        summary = reconcile(kube, namespace)
        if summary.writes == 0:
            mark = kube.log.mark()
            last = reconcile(kube, namespace)
            return sorted((c.verb, c.resource) for c in kube.log.since(mark)), last.writes
        failures = summary.failures
    raise AssertionError(f"no converged pass after 30 passes: {summary.line()} {failures[:3]}")


def test_converged_pass_calls_do_not_grow_with_the_number_of_workspaces(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    kube = Kube(api_client)
    node, label = unique("gpu"), unique("scale")
    # room for every pod: all are bound and stay Pending (no kubelet here), a stable world
    create_gpu_node(api_client, node, instance_type="Standard_NC6s_v3", gpus=100,
                    labels={"apps": label}, pods="120")
    try:
        seen: dict[int, tuple[list[tuple[str, str]], int]] = {}
        total = 0
        for n in (1, 10, 100):
            while total < n:
                create_ws(api_client, namespace, phi3(f"ws-{total}", label))
                total += 1
            seen[n] = _converge(kube, namespace)
        assert {w for _c, w in seen.values()} == {0}, seen
        assert [c for c, _w in seen.values()] == [CONVERGED_READS] * 3, seen
    finally:
        delete_node(api_client, node)
