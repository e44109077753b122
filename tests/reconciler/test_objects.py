"""Desired child objects: golden files for the seed's shapes, and the contract's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.common import ANNOTATION_SPEC_HASH, spec_hash
from reconciler.expansion import prepare
from reconciler.objects import ObjectsError, _dump_flat, _flat_key, desired_objects
from reconciler.podparts import startup_budget_s
from tests.reconciler.helpers import catalog, phi3, tuning_ws
from tests.support.golden import check_golden

GOLDEN = Path(__file__).parent / "golden"
Obj = dict[str, Any]


def _meta(obj: Obj, ns: str = "default") -> Obj:
    obj["metadata"].update(namespace=ns, uid="1111-2222", generation=1)
    return obj


def _adapters() -> Obj:
    ws = phi3("workspace-phi-3-mini-adapter", "phi-3-adapter")
    ws["inference"]["preset"]["name"] = "phi-3-mini-128k-instruct"
    ws["inference"]["adapters"] = [{"source": {
        "name": "phi-3-adapter", "image": "registry.example.com/adapters/phi-3:0.0.1",
        "imagePullSecrets": ["adapter-pull"]}, "strength": "1.0"}]
    return ws


def _multi() -> Obj:
    return phi3("workspace-llama-3-3-70b", "llama", instance_type="Standard_NC24ads_A100_v4") | {
        "inference": {"preset": {"name": "llama-3.3-70b-instruct",
                                 "presetOptions": {"modelAccessSecret": "hf-token"}}}}


CASES = [
    pytest.param(phi3("workspace-phi-3-mini", "phi-3"), ["gpu-1"], id="phi3-one-node"),
    pytest.param(_adapters(), ["gpu-1"], id="phi3-with-adapter"),
    pytest.param(_multi(), ["gpu-1", "gpu-2", "gpu-3"], id="llama-70b-multi-node"),
    pytest.param(tuning_ws("workspace-tuning-phi-3", "phi-3-adapter"), ["gpu-1"], id="tuning"),
]


def render(obj: Obj, nodes: list[str], user: dict[str, str] | None = None) -> list[Obj]:
    prep = prepare(_meta(obj), catalog())
    return desired_objects(prep.ws, prep.resolved, nodes, user_config=user)


@pytest.mark.parametrize(("obj", "nodes"), CASES)
def test_desired_objects_match_the_golden_files(
    obj: Obj, nodes: list[str], request: pytest.FixtureRequest, update_golden: bool,
) -> None:
    name = request.node.callspec.id
    check_golden(GOLDEN / f"{name}.yaml", render(obj, nodes), update=update_golden)


@pytest.mark.parametrize(("obj", "nodes"), CASES)
def test_every_child_is_owned_labelled_and_hashed(obj: Obj, nodes: list[str]) -> None:
    for child in render(obj, nodes):
        md = child["metadata"]
        assert md["ownerReferences"][0]["controller"] is True
        assert md["ownerReferences"][0]["blockOwnerDeletion"] is True
        assert set(md["labels"]) == {"kaito.sh/workspace", "kaito.sh/workspacenamespace"}
        assert md["annotations"][ANNOTATION_SPEC_HASH] == spec_hash(child)


def test_multi_node_is_a_statefulset_with_a_headless_service_and_leader_service() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(_multi(), ["a", "b", "c"])}
    assert ("StatefulSet", "workspace-llama-3-3-70b") in kinds
    assert ("Service", "workspace-llama-3-3-70b-headless") in kinds
    assert not any(k == "Deployment" for k, _n in kinds)


def test_the_users_config_wins_key_by_key() -> None:
    user = {"inference_config.yaml": "vllm:\n  max-model-len: 2048\n  enforce-eager: true\n"}
    objs = render(phi3("ws", "x"), ["n"], user)
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    assert "max-model-len: 2048" in cm["data"]["inference_config.yaml"]
    assert "gpu-memory-utilization" in cm["data"]["inference_config.yaml"]
    cmd = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"][0]["command"]
    assert cmd[cmd.index("--max-model-len") + 1] == "2048"
    assert "--enforce-eager" in cmd


def test_a_user_config_that_is_not_yaml_is_a_clear_error() -> None:
    with pytest.raises(ObjectsError, match="not valid YAML"):
        render(phi3("ws", "x"), ["n"], {"inference_config.yaml": "vllm: [unclosed"})


@pytest.mark.parametrize(("gib", "budget"), [(0.0, 1800), (7.12, 1800), (100.0, 2700),
                                             (1000.0, 10800)])
def test_startup_budget_grows_with_weights_within_bounds(gib: float, budget: int) -> None:
    assert startup_budget_s(gib) == budget


def test_ttl_comes_from_the_annotation_and_bad_values_are_refused() -> None:
    ws = tuning_ws("ws-t", "x")
    ws["metadata"]["annotations"]["kaito.sh/tuning-ttl-seconds"] = "600"
    job = render(ws, ["n"])[0]
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    ws["metadata"]["annotations"]["kaito.sh/tuning-ttl-seconds"] = "soon"
    with pytest.raises(ValueError, match="whole number"):
        render(ws, ["n"])


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.dictionaries(st.text(max_size=8), _SCALARS,
                                                            max_size=5), max_size=3))
def test_a_config_dumped_once_per_process_reads_the_same_as_dumped_each_time(
        config: dict[str, dict[str, Any]]) -> None:
    """The config ConfigMap's YAML is cached per distinct config: the cache must never hand
    one config another's text (1, 1.0 and True are equal in Python, not in YAML)."""
    key = _flat_key(config)
    assert key is not None
    assert _dump_flat(key) == yaml.safe_dump(config, sort_keys=True)
    for a, b in ((1, 1.0), (1, True), (0, False)):
        key_a, key_b = _flat_key({"s": {"k": a}}), _flat_key({"s": {"k": b}})
        assert key_a is not None
        assert key_b is not None
        assert _dump_flat(key_a) != _dump_flat(key_b)


def test_a_config_with_nested_values_is_not_cached_and_still_dumped() -> None:
    assert _flat_key({"vllm": {"k": [1, 2]}}) is None
    assert _flat_key({"vllm": 3}) is None
