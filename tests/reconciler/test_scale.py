"""A converged pass makes the same number of API calls for 1, 10 and 100 Workspaces."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from rig.nodes import create_gpu_node, delete_node

from reconciler.kube import Kube
from tests.reconciler.helpers import create_ws, phi3, reconcile, unique

pytestmark = pytest.mark.cluster


def _converge(kube: Kube, namespace: str) -> tuple[int, int]:
    failures: list[str] = []
    for _ in range(30):  # the controllers create pods gradually; the status follows them
        time.sleep(1)
        summary = reconcile(kube, namespace)
        if summary.writes == 0:
            last = reconcile(kube, namespace)
            return last.calls, last.writes
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
        seen: dict[int, tuple[int, int]] = {}
        total = 0
        for n in (1, 10, 100):
            while total < n:
                create_ws(api_client, namespace, phi3(f"ws-{total}", label))
                total += 1
            seen[n] = _converge(kube, namespace)
        assert {w for _c, w in seen.values()} == {0}, seen
        assert len({c for c, _w in seen.values()}) == 1, seen
        assert seen[100][0] <= 8, seen
    finally:
        delete_node(api_client, node)
