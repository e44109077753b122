"""plan(desired, actual): create what is missing, replace what drifted, delete strays."""

from __future__ import annotations

import copy
from typing import Any

from reconciler.common import with_hash
from reconciler.plan import plan, project

Obj = dict[str, Any]


def deployment(replicas: int = 1) -> Obj:
    return with_hash({"apiVersion": "apps/v1", "kind": "Deployment",
                      "metadata": {"name": "ws", "namespace": "ns", "labels": {"a": "b"}},
                      "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                          {"name": "model", "image": "img"}]}}}})


def live(obj: Obj, **server: Any) -> Obj:
    out = copy.deepcopy(obj)
    out["metadata"].update(resourceVersion="7", uid="u", creationTimestamp="t")
    out["spec"]["template"]["spec"]["containers"][0].update(
        imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    out["spec"].update(server)
    out["status"] = {"readyReplicas": 1}
    return out


def test_nothing_to_do_when_only_server_defaults_differ() -> None:
    want = deployment()
    assert plan([want], [live(want, revisionHistoryLimit=10)]) == []


def test_a_missing_child_is_created_and_a_stray_one_deleted() -> None:
    want = deployment()
    stray = live(deployment())
    stray["metadata"]["name"] = "old"
    ops = [(a.op, a.obj["metadata"]["name"]) for a in plan([want], [stray])]
    assert ops == [("create", "ws"), ("delete", "old")]


def test_scaling_by_hand_is_drift_and_the_update_is_unconditional() -> None:
    want = deployment()
    have = live(want)
    have["spec"]["replicas"] = 3
    (action,) = plan([want], [have])
    assert (action.op, action.obj["spec"]["replicas"]) == ("update", 1)
    assert "resourceVersion" not in action.obj["metadata"]  # unconditional: no lost race
    assert "spec was changed" in action.why


def test_a_new_spec_hash_updates_and_a_changed_job_is_recreated() -> None:
    old, new = deployment(1), deployment(2)
    assert [a.op for a in plan([new], [live(old)])] == ["update"]
    job = with_hash({"apiVersion": "batch/v1", "kind": "Job",
                     "metadata": {"name": "ws", "namespace": "ns"}, "spec": {"x": 1}})
    job2 = with_hash({**copy.deepcopy(job), "spec": {"x": 2}})
    assert [a.op for a in plan([job2], [job])] == ["delete"]


def test_project_keeps_only_the_desired_shape() -> None:
    assert project({"a": [{"b": 1}]}, {"a": [{"b": 1, "c": 2}], "d": 3}) == {"a": [{"b": 1}]}
    assert project({"a": [1, 2]}, {"a": [1]}) == {"a": [1]}
