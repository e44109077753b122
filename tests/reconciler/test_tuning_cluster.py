"""The seed's tuning Workspace: one pass makes the Job; its end shows in the status.

The phi-3 QLoRA Job needs a GPU: the simulated kubelet makes it succeed or fail with a
termination message (the SmolLM2 tuning Job runs for real: tests/e2e/test_tuning_real.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from reconciler import weights
from reconciler.kube import Kube
from rig.kubelet import SimKubelet
from rig.nodes import create_gpu_node, delete_node
from rig.podstatus import Action
from tests.reconciler.helpers import (
    conditions,
    create_ws,
    get_ws,
    reconcile,
    tuning_ws,
    unique,
    wait,
)
from tests.support.cluster import Kubectl

pytestmark = pytest.mark.cluster
BAD_DATA = "bad data: no 'messages' column and no prompt/completion columns; found: text, id"


@pytest.fixture
def tuning_node(api_client: client.ApiClient) -> Iterator[tuple[str, str]]:
    name, label = unique("gpu"), unique("tune")
    create_gpu_node(api_client, name, instance_type="Standard_NC6s_v3", gpus=1,
                    gpu_product="Tesla-V100-PCIE-16GB", labels={"app": label})
    yield name, label
    delete_node(api_client, name)


def test_tuning_job_has_the_steps_node_affinity_and_gpus_and_success_shows(
    api_client: client.ApiClient, namespace: str, tuning_node: tuple[str, str],
    kubectl: Kubectl, workspace_crd: object,
) -> None:
    node, label = tuning_node
    kube = Kube(api_client)
    create_ws(api_client, namespace, tuning_ws("ws-tune", label))
    first = reconcile(kube, namespace)
    assert first.failed == 0, (first.line(), first.failures)
    job = kube.list_items("batch/v1", "Job", namespace, "kaito.sh/workspace=ws-tune")[0]
    pod = job["spec"]["template"]["spec"]
    # the default node cache is a hostPath: its owner goes first (reconciler.weights)
    init = {c["name"]: c for c in pod["initContainers"]}
    assert list(init) == [weights.OWNER_CONTAINER, "fetch-data", "train"]
    assert [c["name"] for c in pod["containers"]] == ["push"]
    assert init["train"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    exprs = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"]
    assert {(e["key"], e["values"][0]) for e in exprs} == {
        ("app", label), ("kubernetes.io/hostname", node)}
    kubelet = SimKubelet(api_client, nodes=[node], policy=lambda _p: "succeed").start()
    try:
        def done() -> bool:
            reconcile(kube, namespace)
            conds = conditions(get_ws(api_client, namespace, "ws-tune"))
            return conds.get("WorkspaceSucceeded", {}).get("status") == "True"

        wait(done, 60, "WorkspaceSucceeded True")
    finally:
        kubelet.stop()
    conds = conditions(get_ws(api_client, namespace, "ws-tune"))
    assert conds["JobStarted"]["status"] == "True"
    wide = kubectl("get", "workspace", "ws-tune", "-n", namespace, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    cells = dict(zip(header.split(), row.split(), strict=False))
    assert cells["WORKSPACESUCCEEDED"] == "True", wide
    assert cells["JOBSTARTED"] == "True", wide


def test_a_failed_tuning_job_shows_the_reason_from_the_termination_message(
    api_client: client.ApiClient, namespace: str, tuning_node: tuple[str, str],
    workspace_crd: object,
) -> None:
    node, label = tuning_node
    kube = Kube(api_client)
    create_ws(api_client, namespace, tuning_ws("ws-bad-data", label))
    reconcile(kube, namespace)
    kubelet = SimKubelet(api_client, nodes=[node],
                         policy=lambda _p: Action("fail", message=BAD_DATA, exit_code=1)).start()
    try:
        def failed() -> bool:
            reconcile(kube, namespace)
            conds = conditions(get_ws(api_client, namespace, "ws-bad-data"))
            return conds.get("WorkspaceSucceeded", {}).get("status") == "False" and \
                conds.get("JobStarted", {}).get("status") == "True"

        wait(failed, 60, "WorkspaceSucceeded False after the Job failed")
    finally:
        kubelet.stop()
    cond = conditions(get_ws(api_client, namespace, "ws-bad-data"))["WorkspaceSucceeded"]
    assert cond["reason"] == "BadData"
    assert "found: text, id" in cond["message"]
