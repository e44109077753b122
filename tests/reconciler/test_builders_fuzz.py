"""Hypothesis over the reconciler's pure builders with the user's inference ConfigMap as
the attack surface: any YAML-able value in any key of the runtime's section either builds
the objects or is an ObjectsError / ValueError naming the problem (the pass turns both into
status); no other exception, and the objects are JSON-serializable. The examples run are in
the run's "Hypothesis examples" summary.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.expansion import prepare
from reconciler.objects import ObjectsError, desired_objects
from reconciler.userdata import MAX_BYTES
from tests.reconciler.helpers import catalog, phi3
from tests.support.fuzzing import Long, repeated

KEYS = ["max-model-len", "tensor-parallel-size", "gpu-memory-utilization", "dtype", "model",
        "enforce-eager", "served-model-name", "lora-modules", "port", "", "x" * 300]
# Wide on purpose: integers past 64 bits, NaN and infinities, long strings, and values
# nested deeper (or texts larger) than the bounded YAML loader accepts.
scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.sampled_from([2**63, -(2**63) - 1, 10**400, "0x1F", "1e3", "yes", "~", "-"])
           | st.text(max_size=30) | st.text(min_size=200, max_size=2000))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=6), max_leaves=30)


def _nest(depth: int, leaf: Any, as_dict: bool) -> Any:
    out = leaf
    for _ in range(depth):
        out = {"k": out} if as_dict else [out]
    return out


class Dumper(yaml.SafeDumper):
    """safe_dump, plus Long (a str that prints short) written as the plain str it is."""


Dumper.add_representer(Long, yaml.SafeDumper.represent_str)


deep = st.builds(_nest, st.integers(1, 120), scalars, st.booleans())
large = repeated(st.just("x"), st.integers(-2048, 2048).map(lambda d: MAX_BYTES + d))
sections = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), values | deep,
                           max_size=6)
configs = st.one_of(
    st.fixed_dictionaries({"vllm": sections | values | deep}),
    st.fixed_dictionaries({"vllm": st.fixed_dictionaries({"max-model-len": large})}),
    st.dictionaries(st.sampled_from(["vllm", "transformers", "other"]), values | deep,
                    max_size=3),
    values,
    deep,
)
PREP = prepare({**phi3("ws", "x"), "metadata": {"name": "ws", "namespace": "default",
                                                 "uid": "u-1", "generation": 1}}, catalog())


@settings(max_examples=1000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=configs)
def test_any_user_config_builds_or_is_a_clear_error(config: Any) -> None:
    text = yaml.dump(config, Dumper=Dumper)
    try:
        objs = desired_objects(PREP.ws, PREP.resolved, ["n"],
                               user_config={"inference_config.yaml": text})
    except (ObjectsError, ValueError):
        return
    json.dumps(objs, allow_nan=False)  # what the apiserver accepts: no NaN or Infinity
