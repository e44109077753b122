"""The ClusterRole grants exactly the verbs the reconciler's code paths use.

The test drives every kind of write (create, drift update, stray delete, Job recreate,
finalizer, status, Events, NodeClaim create and release), a pod still fetching weights (its
log is read) and the watch loop, collects the calls the client recorded, and compares them
with manifests/base/reconciler/rbac.yaml.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from reconciler.kube import Kube
from reconciler.lease import Lease
from reconciler.reconcile import run_pass
from reconciler.settings import Settings
from reconciler.watch import watch_loop
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.helpers import (
    catalog,
    create_ws,
    phi3,
    provisioners,
    reconcile,
    tuning_ws,
    unique,
)

pytestmark = pytest.mark.cluster
RBAC = Path(__file__).resolve().parents[2] / "manifests" / "base" / "reconciler" / "rbac.yaml"


def granted_rules() -> list[tuple[set[str], set[str]]]:
    """The ClusterRole's rules and the Lease Role's (namespaced to the operator)."""
    out = []
    for role in yaml.safe_load_all(RBAC.read_text()):
        if role["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in role["rules"]:
            resources = {f"{g}/{r}" for g in rule["apiGroups"] for r in rule["resources"]}
            out.append((resources, set(rule["verbs"])))
    return out


def _stray(ws: dict[str, object], ns: str, kind: str) -> dict[str, object]:
    md = ws["metadata"]
    assert isinstance(md, dict)
    body: dict[str, object] = {
        "apiVersion": "v1" if kind == "ConfigMap" else "apps/v1", "kind": kind,
        "metadata": {"name": f"stray-{kind.lower()}", "namespace": ns,
                     "labels": {"kaito.sh/workspace": md["name"],
                                "kaito.sh/workspacenamespace": ns},
                     "ownerReferences": [{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                                          "name": md["name"], "uid": md["uid"],
                                          "controller": True}]}}
    if kind == "Deployment":
        body["spec"] = {"replicas": 0, "selector": {"matchLabels": {"x": "stray"}},
                        "template": {"metadata": {"labels": {"x": "stray"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}
    return body


def _multi(ns: str, label: str) -> dict[str, object]:
    """llama-3.3-70b on three Standard_NC24ads_A100_v4 nodes: a StatefulSet and its
    NetworkPolicy."""
    body = phi3("ws-m", label, instance_type="Standard_NC24ads_A100_v4")
    body["inference"] = {"preset": {"name": "llama-3.3-70b-instruct",
                                    "presetOptions": {"modelAccessSecret": "hf-token"}}}
    return body


def _fetching_pod(api: client.ApiClient, ns: str, workspace: str) -> None:
    """A pod of the Workspace whose model container runs and is not ready yet, as while its
    weights download: the pass reads its log tail (made with the test's own client)."""
    core = client.CoreV1Api(api)
    labels = {"kaito.sh/workspace": workspace, "kaito.sh/workspacenamespace": ns}
    core.create_namespaced_pod(ns, client.V1Pod(
        metadata=client.V1ObjectMeta(name=f"{workspace}-fetching", labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="model", image="x")])))
    core.patch_namespaced_pod_status(f"{workspace}-fetching", ns, {"status": {
        "phase": "Running", "containerStatuses": [{
            "name": "model", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"running": {"startedAt": "2026-12-03T00:00:00Z"}}}]}})


def _drive(api: client.ApiClient, kube: Kube, ns: str, label: str, multi_label: str) -> None:
    ws = create_ws(api, ns, phi3("ws-a", label))
    multi = create_ws(api, ns, _multi(ns, multi_label))
    tune = tuning_ws("ws-t", label)
    create_ws(api, ns, tune)
    karp = phi3("ws-k", unique("none"), instance_type="Standard_NC24ads_A100_v4")
    karp["metadata"]["annotations"] = {"kaito.sh/provisioner": "karpenter"}
    create_ws(api, ns, karp)
    kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "ws-c-config", "namespace": ns},
                 "data": {"inference_config.yaml": "vllm: {}\n"}})
    configured = phi3("ws-c", unique("none"))
    configured["inference"]["config"] = "ws-c-config"
    create_ws(api, ns, configured)
    lease = Lease(kube, ns)
    run_pass(kube, Settings(namespace=ns, provisioner="byo"), catalog(), provisioners(),
             lease=lease)
    lease.release()
    kube.merge_patch({"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": "ws-a", "namespace": ns}}, {"spec": {"replicas": 2}})
    kube.create(_stray(ws, ns, "ConfigMap"))
    kube.create(_stray(ws, ns, "Deployment"))
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "ws-m-cluster", "namespace": ns}}
    kube.merge_patch(policy, {"spec": {"policyTypes": ["Ingress", "Egress"]}})
    stray_policy = _stray(multi, ns, "ConfigMap")
    stray_policy.update(apiVersion="networking.k8s.io/v1", kind="NetworkPolicy",
                        spec={"podSelector": {}})
    stray_policy.pop("data", None)
    assert isinstance(stray_policy["metadata"], dict)
    stray_policy["metadata"]["name"] = "stray-networkpolicy"
    kube.create(stray_policy)
    kube.merge_patch({"apiVersion": "batch/v1", "kind": "Job",
                      "metadata": {"name": "ws-t", "namespace": ns}},
                     {"metadata": {"annotations": {"kaito.sh/spec-hash": "edited"}}})
    kube.merge_patch({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "ws-a-inference-config", "namespace": ns}},
                     {"data": {"inference_config.yaml": "edited: true\n"}})
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "kaito.sh", "v1beta1", ns, "workspaces", "ws-k")
    _fetching_pod(api, ns, "ws-a")
    for _ in range(3):
        reconcile(kube, ns)
    stop = threading.Event()
    settings = Settings(namespace=ns, provisioner="byo")
    watch_loop(kube, settings, catalog(), provisioners(), debounce=0.1, max_passes=1, stop=stop)


def test_the_cluster_role_holds_exactly_the_verbs_the_code_uses(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    node, label = unique("gpu"), unique("rbac")
    create_gpu_node(api_client, node, instance_type="Standard_NC6s_v3", gpus=2,
                    labels={"apps": label, "app": label})
    multi_label = unique("rbac-multi")
    multi_nodes = [unique("a100") for _ in range(3)]
    for name in multi_nodes:
        create_gpu_node(api_client, name, instance_type="Standard_NC24ads_A100_v4", gpus=2,
                        labels={"apps": multi_label})
    kube = Kube(api_client)
    try:
        mark = kube.log.mark()
        _drive(api_client, kube, namespace, label, multi_label)
    finally:
        for name in [node, *multi_nodes]:
            delete_node(api_client, name)
    # the test's own setup writes (strays, edits) are made with the same client: drop them
    ours = {("create", "configmaps"), ("create", "deployments"), ("patch", "jobs"),
            ("patch", "networkpolicies"), ("create", "networkpolicies"),
            ("patch", "configmaps"), ("patch", "deployments")}
    used = {(f"{c.group}/{c.resource}" + (f"/{c.subresource}" if c.subresource else ""), c.verb)
            for c in kube.log.since(mark)}
    rules = granted_rules()
    for resource, verb in sorted(used):
        if (verb, resource.split("/")[1]) in ours and verb == "patch":
            continue
        assert any(resource in res and verb in verbs for res, verbs in rules), (resource, verb)
    for resources, verbs in rules:
        for verb in verbs:
            assert any((r, verb) in used for r in resources), f"{verb} on {resources} is unused"
