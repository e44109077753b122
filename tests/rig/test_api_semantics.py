"""The API-server behaviours the product relies on, proven against the rig's real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rig.kapi import Kube, KubeApiError
from tests.support.probes import wait_for

pytestmark = pytest.mark.cluster
NODECLAIMS = "/apis/karpenter.sh/v1/nodeclaims"


def _configmap(name: str, data: dict[str, str],
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


def _cms(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps"


@pytest.fixture
def nodeclaims(kube: Kube) -> Iterator[list[str]]:
    """Names of NodeClaims a test made (cluster-scoped), deleted afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        kube.delete(f"{NODECLAIMS}/{name}", missing_ok=True)


def _nodeclaim(name: str) -> dict[str, Any]:
    return {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name, "labels": {"kaito.sh/workspace": "ws"}},
            "spec": {"nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass",
                                      "name": "image-family-ubuntu"},
                     "requirements": [{"key": "node.kubernetes.io/instance-type",
                                       "operator": "In", "values": ["Standard_NC6s_v3"]}]}}


def test_an_update_with_a_stale_resource_version_is_refused_with_409(
        kube: Kube, namespace: str) -> None:
    kube.create(_cms(namespace), _configmap("cm", {"a": "1"}))
    stale = kube.get(f"{_cms(namespace)}/cm")
    kube.replace(f"{_cms(namespace)}/cm", {**stale, "data": {"a": "2"}})
    with pytest.raises(KubeApiError) as info:
        kube.replace(f"{_cms(namespace)}/cm", {**stale, "data": {"a": "3"}})
    assert info.value.status == 409
    assert info.value.reason == "Conflict"
    assert kube.get(f"{_cms(namespace)}/cm")["data"] == {"a": "2"}


def test_the_status_subresource_keeps_spec_and_status_writes_apart(
        kube: Kube, nodeclaims: list[str]) -> None:
    name = f"nc-{uuid.uuid4().hex[:8]}"
    nodeclaims.append(name)
    kube.create(NODECLAIMS, _nodeclaim(name))
    kube.patch(f"{NODECLAIMS}/{name}",
               {"metadata": {"labels": {"x": "main"}}, "status": {"nodeName": "from-main"}})
    kube.patch(f"{NODECLAIMS}/{name}/status",
               {"metadata": {"labels": {"x": "status"}}, "status": {"nodeName": "from-status"},
                "spec": {"expireAfter": "1h"}})
    obj = kube.get(f"{NODECLAIMS}/{name}")
    assert obj["metadata"]["labels"]["x"] == "main"
    assert obj["status"] == {"nodeName": "from-status"}
    assert "expireAfter" not in obj["spec"]


def test_the_nodeclaim_schema_refuses_an_unknown_operator_and_a_missing_class(
        kube: Kube, nodeclaims: list[str]) -> None:
    bad_operator = _nodeclaim(f"nc-{uuid.uuid4().hex[:8]}")
    bad_operator["spec"]["requirements"][0]["operator"] = "Maybe"
    with pytest.raises(KubeApiError) as info:
        kube.create(NODECLAIMS, bad_operator)
    assert info.value.status == 422
    assert "Maybe" in info.value.message
    assert "NotIn" in info.value.message
    no_class = _nodeclaim(f"nc-{uuid.uuid4().hex[:8]}")
    del no_class["spec"]["nodeClassRef"]
    with pytest.raises(KubeApiError) as info:
        kube.create(NODECLAIMS, no_class)
    assert "spec.nodeClassRef: Required value" in info.value.message


def test_json_merge_and_strategic_patches_each_mean_what_they_say(
        kube: Kube, namespace: str) -> None:
    cm = f"{_cms(namespace)}/cm"
    kube.create(_cms(namespace), _configmap("cm", {"a": "1", "b": "2"}))
    kube.patch(cm, [{"op": "replace", "path": "/data/a", "value": "10"},
                    {"op": "remove", "path": "/data/b"}], "json")
    assert kube.get(cm)["data"] == {"a": "10"}
    with pytest.raises(KubeApiError) as info:  # a failing JSON-patch test op changes nothing
        kube.patch(cm, [{"op": "test", "path": "/data/a", "value": "nope"},
                        {"op": "remove", "path": "/data/a"}], "json")
    assert info.value.status == 422
    kube.patch(cm, {"data": {"a": None, "c": "3"}}, "merge")
    assert kube.get(cm)["data"] == {"c": "3"}
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube.create(pods, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "one", "image": "img:1"}, {"name": "two", "image": "img:1"}]}})
    change = {"spec": {"containers": [{"name": "two", "image": "img:2"}]}}
    kube.patch(f"{pods}/p", change, "strategic")
    images = {c["name"]: c["image"] for c in kube.get(f"{pods}/p")["spec"]["containers"]}
    assert images == {"one": "img:1", "two": "img:2"}  # merged by name, not replaced
    with pytest.raises(KubeApiError) as info:  # a merge patch replaces the list instead
        kube.patch(f"{pods}/p", change, "merge")
    assert info.value.status == 422  # ...which a pod's immutable container list refuses


def test_a_finalizer_holds_deletion_until_it_is_removed(kube: Kube, namespace: str) -> None:
    cm = _configmap("held", {"a": "1"})
    cm["metadata"]["finalizers"] = ["workspace.kaito.sh/cleanup"]
    kube.create(_cms(namespace), cm)
    kube.delete(f"{_cms(namespace)}/held")
    held = kube.get(f"{_cms(namespace)}/held")
    assert held["metadata"]["deletionTimestamp"]
    kube.patch(f"{_cms(namespace)}/held", {"metadata": {"finalizers": None}})
    with pytest.raises(KubeApiError) as info:
        kube.get(f"{_cms(namespace)}/held")
    assert info.value.status == 404


def test_the_garbage_collector_deletes_children_of_a_deleted_owner(
        kube: Kube, namespace: str) -> None:
    owner = kube.create(_cms(namespace), _configmap("owner", {}))
    child = _configmap("child", {})
    child["metadata"]["ownerReferences"] = [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    kube.create(_cms(namespace), child)
    kube.delete(f"{_cms(namespace)}/owner")
    wait_for("the controller manager's garbage collector to delete the child",
             lambda: "child" not in {c["metadata"]["name"] for c in kube.items(_cms(namespace))})


def test_label_selectors_filter_lists_on_the_server(kube: Kube, namespace: str) -> None:
    for name, labels in [("a", {"kaito.sh/workspace": "one", "tier": "x"}),
                         ("b", {"kaito.sh/workspace": "two"}), ("c", {})]:
        kube.create(_cms(namespace), _configmap(name, {}, labels))

    def names(selector: str) -> set[str]:
        items = kube.items(_cms(namespace), labelSelector=selector)
        return {i["metadata"]["name"] for i in items} - {"kube-root-ca.crt"}

    assert names("kaito.sh/workspace=one") == {"a"}
    assert names("kaito.sh/workspace") == {"a", "b"}
    assert names("kaito.sh/workspace in (one,two),tier") == {"a"}
    assert names("!kaito.sh/workspace") == {"c"}
