"""A Workspace with its own pod template runs that template: a Deployment on its nodes."""

from __future__ import annotations

from typing import Any

from reconciler.expansion import prepare
from reconciler.objects import desired_objects
from tests.reconciler.helpers import catalog

Obj = dict[str, Any]
TEMPLATE: Obj = {
    "metadata": {"labels": {"app": "custom"}},
    "spec": {
        "containers": [{"name": "server", "image": "registry.example.com/custom:1",
                        "ports": [{"containerPort": 8080}],
                        "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def _template_ws(count: int | None = None) -> Obj:
    obj: Obj = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": "custom", "namespace": "default", "uid": "u-1", "generation": 1},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4",
                     "labelSelector": {"matchLabels": {"apps": "custom"}}},
        "inference": {"template": TEMPLATE},
    }
    if count:
        obj["resource"]["count"] = count
    return obj


def test_the_template_becomes_a_deployment_on_the_workspace_nodes() -> None:
    prep = prepare(_template_ws(), catalog())
    objs = desired_objects(prep.ws, prep.resolved, ["gpu-1"])
    assert [o["kind"] for o in objs] == ["Service", "Deployment"]
    service, deployment = objs
    assert service["spec"]["ports"] == [
        {"name": "port-8080", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["app"] == "custom"
    assert pod["metadata"]["labels"]["kaito.sh/workspace"] == "custom"
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert pod["spec"]["containers"] == TEMPLATE["spec"]["containers"]  # kept as written
    tolerations = pod["spec"]["tolerations"]
    assert tolerations[0] == TEMPLATE["spec"]["tolerations"][0]
    sku = {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
    assert sku in tolerations
    node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
    terms = node_affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    exprs = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": "apps", "operator": "In", "values": ["custom"]} in exprs
    assert {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-1"]} in exprs


def test_a_template_on_several_nodes_is_one_replica_per_node() -> None:
    prep = prepare(_template_ws(count=2), catalog())
    deployment = desired_objects(prep.ws, prep.resolved, ["gpu-1", "gpu-2"])[-1]
    assert deployment["spec"]["replicas"] == 2
    assert "podAntiAffinity" in deployment["spec"]["template"]["spec"]["affinity"]
