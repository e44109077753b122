"""plan(desired, actual): create what is missing, replace what drifted, delete strays."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.common import with_hash
from reconciler.plan import holds, plan

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


def test_holds_ignores_what_the_server_added_and_nothing_else() -> None:
    assert holds({"a": [{"b": 1}]}, {"a": [{"b": 1, "c": 2}], "d": 3})
    assert not holds({"a": [1, 2]}, {"a": [1]})
    assert not holds({"a": {"b": 1}}, {"a": [1]})
    assert not holds({"a": 1}, {})
    assert holds({"a": None}, {})  # an absent key reads as null, as the API shows it


def _projection(desired: Any, actual: Any) -> Any:
    """The part of `actual` that has the shape of `desired`: the definition `holds` keeps."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return actual
        return {k: _projection(v, actual.get(k)) for k, v in desired.items()}
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return actual
        return [_projection(d, a) for d, a in zip(desired, actual, strict=True)]
    return actual


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(_JSON, _JSON)
def test_holds_is_the_projection_compared(desired: Any, actual: Any) -> None:
    assert holds(desired, actual) == (_projection(desired, actual) == desired)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.dictionaries(st.sampled_from(["d", "e"]), _JSON, max_size=2))
def test_what_the_server_adds_is_never_drift(desired: Any, extra: dict[str, Any]) -> None:
    assert holds(desired, desired)
    if isinstance(desired, dict):
        assert holds(desired, {**extra, **desired})
