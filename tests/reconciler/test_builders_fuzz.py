"""Hypothesis over the reconciler's pure builders with the user's inference ConfigMap as
the attack surface: any YAML-able value in any key of the runtime's section either builds
the objects or is an ObjectsError / ValueError naming the problem (the pass turns both into
status); no other exception, and the objects are JSON-serializable. Example count printed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.expansion import prepare
from reconciler.objects import ObjectsError, desired_objects
from tests.reconciler.helpers import catalog, phi3

KEYS = ["max-model-len", "tensor-parallel-size", "gpu-memory-utilization", "dtype", "model",
        "enforce-eager", "served-model-name", "lora-modules", "port", "", "x" * 300]
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
sections = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), values, max_size=6)
configs = st.one_of(
    st.fixed_dictionaries({"vllm": sections | values}),
    st.dictionaries(st.sampled_from(["vllm", "transformers", "other"]), values, max_size=3),
    values,
)
SEEN = {"examples": 0}
PREP = prepare({**phi3("ws", "x"), "metadata": {"name": "ws", "namespace": "default",
                                                 "uid": "u-1", "generation": 1}}, catalog())


@pytest.fixture(scope="module", autouse=True)
def _report() -> Any:
    yield
    print(f"\nbuilder fuzz: {SEEN['examples']} generated inference configs")


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=configs)
def test_any_user_config_builds_or_is_a_clear_error(config: Any) -> None:
    SEEN["examples"] += 1
    text = yaml.safe_dump(config)
    try:
        objs = desired_objects(PREP.ws, PREP.resolved, ["n"],
                               user_config={"inference_config.yaml": text})
    except (ObjectsError, ValueError):
        return
    json.dumps(objs)
