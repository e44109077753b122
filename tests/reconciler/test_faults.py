"""Faults between the reconciler and the API: no duplicates, convergence on a clean pass.

Pods come from the simulated kubelet: the faults sit between the reconciler and the
apiserver, and no container would change what is checked (real pods: tests/e2e).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
from kubernetes import client

from reconciler.kube import Kube, KubeError
from rig.cluster import ControlPlane
from rig.kubelet import SimKubelet, always
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.faultproxy import FaultProxy
from tests.reconciler.helpers import conditions, create_ws, get_ws, phi3, reconcile, unique

pytestmark = pytest.mark.cluster
N = 4


@pytest.fixture
def labelled_node(api_client: client.ApiClient) -> Iterator[str]:
    name, label = unique("gpu"), unique("faults")
    create_gpu_node(api_client, name, instance_type="Standard_NC6s_v3", gpus=N,
                    labels={"apps": label})
    kubelet = SimKubelet(api_client, nodes=[name], policy=always("ready")).start()
    yield label
    kubelet.stop()
    delete_node(api_client, name)


def _owned(kube: Kube, ns: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for api, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap")):
        counts[kind] += len(kube.list_items(api, kind, ns, "kaito.sh/workspace"))
    claims = kube.list_items("karpenter.sh/v1", "NodeClaim", None,
                             f"kaito.sh/workspacenamespace={ns}")
    counts["NodeClaim"] = len(claims)
    return counts


def test_faulty_api_leaves_no_duplicates_and_the_next_clean_pass_converges(
    api_client: client.ApiClient, namespace: str, control_plane: ControlPlane,
    labelled_node: str, workspace_crd: object,
) -> None:
    direct = Kube(api_client)
    for i in range(N):
        create_ws(api_client, namespace, phi3(f"ws-{i}", labelled_node))
    # one more that needs Karpenter: its NodeClaims must never be duplicated
    karp = phi3("ws-karp", unique("none"), instance_type="Standard_NC24ads_A100_v4")
    karp["metadata"]["annotations"] = {"kaito.sh/provisioner": "karpenter"}
    create_ws(api_client, namespace, karp)
    with FaultProxy(control_plane.kubeconfig, fraction=0.5, read_fraction=0.05,
                    delay_s=2.5) as proxy:
        faulty = Kube(proxy.api_client(), timeout=1.5)
        for _ in range(8):
            try:
                reconcile(faulty, namespace)
            except KubeError:
                continue  # a failed LIST ends the pass; the next pass starts over
    time.sleep(proxy.delay_s + 0.5)  # let delayed requests land before judging
    assert sum(proxy.faults.values()) > 5, proxy.faults
    assert all(proxy.faults.values()), proxy.faults  # every kind of fault was injected
    reconcile(direct, namespace)
    reconcile(direct, namespace)
    counts = _owned(direct, namespace)
    assert counts == Counter({"Deployment": N, "Service": N, "ConfigMap": N, "NodeClaim": 1}), (
        dict(counts), proxy.faults)
    last = reconcile(direct, namespace)
    assert last.writes == 0, last.line()
    for i in range(N):
        conds = conditions(get_ws(api_client, namespace, f"ws-{i}"))
        assert conds["ResourceReady"]["status"] == "True"
