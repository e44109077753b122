"""Children belong to a Workspace by owner-reference uid, never by labels alone, and a 422
recreates a child only when the API says a field is immutable (issue L, item 7).

Before issue L: any object labelled for a Workspace with a controller reference of kind
Workspace (any uid) was taken as its child and overwritten or deleted; a same-named object
owned by someone else made `create` "succeed" silently; and every 422 on an update deleted
the child.

Pods come from the simulated kubelet: ownership is decided on API objects alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from reconciler.apply import apply_children
from reconciler.common import ANNOTATION_SPEC_HASH
from reconciler.kube import Kube, KubeError
from reconciler.world import ChildError, owned_by
from rig.kubelet import SimKubelet, always
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.helpers import conditions, create_ws, get_obj, get_ws, phi3, reconcile, unique

Obj = dict[str, Any]


def _child(kind: str, uid: str, name: str = "b") -> Obj:
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "ns",
                         "labels": {"kaito.sh/workspace": "b", "kaito.sh/workspacenamespace": "ns"},
                         "annotations": {ANNOTATION_SPEC_HASH: "old"},
                         "ownerReferences": [{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                                              "name": "b", "uid": uid, "controller": True}]},
            "spec": {"replicas": 1}}


def test_a_child_is_ours_only_by_the_uid_of_a_listed_workspace() -> None:
    by_uid = {"uid-b": ("ns", "b")}
    assert owned_by(_child("Deployment", "uid-b"), by_uid) == ("ns", "b")
    assert owned_by(_child("Deployment", "uid-old-b"), by_uid) is None  # an earlier "b"
    moved = _child("Deployment", "uid-b")
    moved["metadata"]["namespace"] = "other"
    assert owned_by(moved, by_uid) is None
    unlabelled_owner = _child("Deployment", "uid-b")
    unlabelled_owner["metadata"]["ownerReferences"][0]["controller"] = False
    assert owned_by(unlabelled_owner, by_uid) is None


class Refusing:
    """A writer whose updates the API refuses with `error`; records deletes."""

    def __init__(self, error: KubeError) -> None:
        self.error = error
        self.deleted: list[str] = []

    def create_owned(self, obj: Obj) -> Obj:
        return obj

    def update(self, obj: Obj) -> Obj:
        raise self.error

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None
               ) -> None:
        self.deleted.append(f"{kind}/{name}")


def _drifted() -> tuple[list[Obj], list[Obj]]:
    live = _child("Deployment", "uid-b")
    want = _child("Deployment", "uid-b")
    want["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = "new"
    return [want], [live]


def test_a_422_that_is_not_about_an_immutable_field_is_reported_and_the_child_kept() -> None:
    writer = Refusing(KubeError(422, "Invalid", 'Deployment.apps "b" is invalid: '
                                "spec.template.spec.containers[0].resources.requests: "
                                "Invalid value: \"4\": must be less than or equal to cpu limit"))
    desired, actual = _drifted()
    with pytest.raises(ChildError) as err:
        apply_children(writer, desired, actual)  # type: ignore[arg-type]
    assert err.value.reason == "ChildRejected"
    assert "must be less than or equal to cpu limit" in err.value.message
    assert writer.deleted == []


def test_a_422_for_an_immutable_field_recreates_the_child() -> None:
    writer = Refusing(KubeError(422, "Invalid", 'Deployment.apps "b" is invalid: spec.selector: '
                                "Invalid value: {...}: field is immutable"))
    desired, actual = _drifted()
    apply_children(writer, desired, actual)  # type: ignore[arg-type]
    assert writer.deleted == ["Deployment/b"]


@pytest.fixture
def ready_node(api_client: client.ApiClient) -> Iterator[str]:
    name, label = unique("gpu"), unique("own")
    create_gpu_node(api_client, name, instance_type="Standard_NC6s_v3", gpus=2,
                    labels={"apps": label})
    kubelet = SimKubelet(api_client, nodes=[name], policy=always("ready")).start()
    yield label
    kubelet.stop()
    delete_node(api_client, name)


@pytest.mark.cluster
def test_a_look_alike_owned_by_someone_else_is_never_overwritten(
    api_client: client.ApiClient, namespace: str, workspace_crd: object, ready_node: str,
) -> None:
    kube = Kube(api_client)
    ws = create_ws(api_client, namespace, phi3("b", ready_node))
    holder = kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "someone-else", "namespace": namespace}})
    other = _child("Deployment", holder["metadata"]["uid"])
    other["metadata"]["namespace"] = namespace
    other["metadata"]["labels"]["kaito.sh/workspacenamespace"] = namespace
    other["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                             "name": "someone-else",
                                             "uid": holder["metadata"]["uid"],
                                             "controller": True}]
    other["spec"] = {"replicas": 0, "selector": {"matchLabels": {"x": "y"}},
                     "template": {"metadata": {"labels": {"x": "y"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}
    kube.create(other)
    reconcile(kube, namespace)
    after = get_obj(kube, "apps/v1", "Deployment", namespace, "b")
    assert after["spec"]["selector"] == {"matchLabels": {"x": "y"}}
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "x"
    assert after["metadata"]["ownerReferences"][0]["uid"] == holder["metadata"]["uid"]
    assert ANNOTATION_SPEC_HASH not in (after["metadata"].get("annotations") or {}) or \
        after["metadata"]["annotations"][ANNOTATION_SPEC_HASH] == "old"
    cond = conditions(get_ws(api_client, namespace, "b"))["InferenceReady"]
    assert cond["reason"] == "ChildConflict", cond
    assert f"Deployment {namespace}/b already exists" in cond["message"]
    assert ws["metadata"]["uid"] not in str(after["metadata"]["ownerReferences"])
