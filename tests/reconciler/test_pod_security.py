"""Workload pods are hardened like the operator's own (issue L, item 6).

Before issue L the inference and tuning pods ran with the namespace's default service
account token mounted, no securityContext, no CPU/memory requests or limits, an unbounded
in-memory /dev/shm and a tuning Job without a deadline. Every rule is checked on every
golden shape (one node, adapters, multi-node, tuning) and on a user's own image.
"""

from __future__ import annotations

from typing import Any

import pytest

from presets.catalog import InstanceType
from reconciler import weights
from reconciler.podsecurity import harden_pod, node_resources, shm_size
from tests.reconciler.helpers import catalog, phi3, tuning_ws
from tests.reconciler.test_objects import CASES, _multi, render

Obj = dict[str, Any]


def _pods(objs: list[Obj]) -> list[Obj]:
    return [o["spec"]["template"]["spec"] for o in objs
            if o["kind"] in ("Deployment", "StatefulSet", "Job")]


@pytest.mark.parametrize(("obj", "nodes"), CASES)
def test_every_workload_pod_is_hardened(obj: Obj, nodes: list[str]) -> None:
    pods = _pods(render(obj, nodes))
    assert pods
    for pod in pods:
        assert pod["automountServiceAccountToken"] is False
        security = pod["securityContext"]
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert security["runAsNonRoot"] is True  # the project's own images run as 65532
        assert security["runAsUser"] == 65532
        for container in pod.get("initContainers", []) + pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["privileged"] is False
            if container["name"] == weights.OWNER_CONTAINER:  # the one exception: it only
                # hands the hostPath cache directory to 65532 (tests/reconciler/test_weights_pods)
                assert container["command"][0] == "chown"
                assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
                continue
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx.get("runAsNonRoot", True) is True
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"])
            assert {"cpu", "memory"} <= set(resources["limits"])
        shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert all(v["emptyDir"]["sizeLimit"] for v in shm)


def test_resources_come_from_the_instance_type() -> None:
    sku = catalog().instance_type("Standard_NC6s_v3")
    assert sku is not None
    assert node_resources(sku) == {"requests": {"cpu": "3", "memory": "56Gi"},
                                   "limits": {"cpu": "6", "memory": "100Gi"}}
    assert shm_size(sku) == "28Gi"
    deployment = next(o for o in render(phi3("ws", "x"), ["n"]) if o["kind"] == "Deployment")
    model = deployment["spec"]["template"]["spec"]["containers"][0]
    assert model["resources"]["limits"] == {"nvidia.com/gpu": "1", "cpu": "6",
                                            "memory": "100Gi"}


def test_a_users_own_image_keeps_its_user_but_loses_privileges() -> None:
    pod = harden_pod({"containers": [{"name": "c", "image": "example.com/mine:1"}]},
                     image="example.com/mine:1", sku=None)
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert "resources" not in pod["containers"][0]  # node size unknown: no guess


def test_a_big_node_guarantees_at_most_8_cpus_and_64_gib() -> None:
    sku = catalog().instance_type("Standard_NC96ads_A100_v4")
    assert sku is not None
    assert node_resources(sku)["requests"] == {"cpu": "8", "memory": "64Gi"}
    assert node_resources(sku)["limits"]["cpu"] == str(sku.vcpu)


def test_a_small_node_still_gets_a_bounded_share() -> None:
    tiny = InstanceType(name="t", cloud="azure", gpu_model=None, gpu_count=0,
                        gpu_memory_gib=0, vcpu=1, memory_gib=1.5, relative_cost=0.01)
    assert node_resources(tiny) == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                    "limits": {"cpu": "1", "memory": "1Gi"}}
    assert shm_size(tiny) == "1Gi"


def test_the_tuning_job_has_a_deadline_the_annotation_may_only_shorten() -> None:
    job = render(tuning_ws("ws-t", "x"), ["n"])[0]
    assert job["spec"]["activeDeadlineSeconds"] == 48 * 3600
    assert job["spec"]["backoffLimit"] == 0  # the helper's annotation
    ws = tuning_ws("ws-t", "x")
    ws["metadata"]["annotations"]["kaito.sh/tuning-deadline-seconds"] = str(10**9)
    assert render(ws, ["n"])[0]["spec"]["activeDeadlineSeconds"] == 48 * 3600
    ws["metadata"]["annotations"]["kaito.sh/tuning-deadline-seconds"] = "3600"
    assert render(ws, ["n"])[0]["spec"]["activeDeadlineSeconds"] == 3600


def test_the_backoff_annotation_is_capped() -> None:
    ws = tuning_ws("ws-t", "x")
    ws["metadata"]["annotations"]["kaito.sh/tuning-backoff-limit"] = "1000"
    with pytest.raises(ValueError, match="at most 10"):
        render(ws, ["n"])


def test_multi_node_pods_accept_cluster_traffic_only_from_their_own_workspace() -> None:
    objs = render(_multi(), ["gpu-1", "gpu-2", "gpu-3"])
    policy = next(o for o in objs if o["kind"] == "NetworkPolicy")
    own = next(o for o in objs if o["kind"] == "StatefulSet")["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"] == {"matchLabels": own}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": own}}]},  # Ray head/workers, torch
        {"ports": [{"protocol": "TCP", "port": 5000}]},  # the model API, for clients
    ]
    assert not any(o["kind"] == "NetworkPolicy" for o in render(phi3("ws", "x"), ["n"]))
