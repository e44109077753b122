"""Hypothesis strategies for AdmissionReviews and Workspaces: right shapes, wrong types, junk."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from crds.workspace import (
    ANNOTATION_BYPASS,
    ANNOTATION_CATALOG_REVISION,
    ANNOTATION_MAX_MODEL_LEN,
    ANNOTATION_RUNTIME,
)
from presets.catalog import load_catalog
from tests.support.fuzzing import repeated
from webhook.settings import DEFAULT_MAX_BODY_BYTES

_CATALOG = load_catalog()
# Wide on purpose: integers past 64 bits, long and non-ASCII strings, and (`hostile`, at
# the top of a Workspace or as a whole body) what the server must refuse by its bounds:
# nesting deeper than it accepts (up to what Python's json encoder can still write; deeper
# raw text is in tests/webhook/test_fuzz.py), Infinity (not JSON), and bodies over the size
# limit. Kept apart so that most generated Workspaces still reach the admission rules.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**400), 1e308, -0.0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.text(max_size=200)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=16,
)


def _nest(depth: int, leaf: Any, as_dict: bool) -> Any:
    out = leaf
    for _ in range(depth):
        out = {"a": out} if as_dict else [out]
    return out


hostile = st.one_of(
    st.builds(_nest, st.integers(1, 900), json_scalars, st.booleans()),
    st.builds(_nest, st.integers(0, 3), st.sampled_from([float("inf"), float("-inf")]),
              st.booleans()),
    # one character repeated: 1 byte of JSON each (ASCII) up to 12 (an escaped astral one)
    repeated(st.characters(), st.integers(1_000, 400_000)),
    # a body near the server's size limit, on either side of it
    repeated(st.just("x"), st.integers(-4096, 4096).map(lambda d: DEFAULT_MAX_BODY_BYTES + d)),
)


def maybe(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right shape, sometimes any JSON value instead."""
    return st.one_of(right, right, right, json_values)


names = st.sampled_from(
    [
        *sorted(_CATALOG.models),
        "",
        "nope",
        "phi-3-mini-4k-instructt",
        "microsoft/Phi-3-mini-4k-instruct",
    ]
)
skus = st.sampled_from(
    [*sorted(_CATALOG.instance_types), "", "Standard_Nope_v9", "standard_nc6s_v3"]
)
strengths = st.sampled_from(["0", "0.5", "1.0", "1", "2", "-0.1", "abc", "", "0.25"]) | st.text(
    max_size=4
)
adapter = st.fixed_dictionaries(
    {
        "source": maybe(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["a", "b", "a", ""])},
                optional={"image": st.sampled_from(["r.io/a:1", "", "x y"])},
            )
        ),
        "strength": maybe(strengths),
    }
)
preset = st.fixed_dictionaries(
    {"name": maybe(names)},
    optional={
        "accessMode": st.sampled_from(["public", "private", "x"]),
        "presetOptions": maybe(st.fixed_dictionaries({}, optional={"image": st.text(max_size=8)})),
    },
)
inference = st.fixed_dictionaries(
    {},
    optional={
        "preset": maybe(preset),
        "adapters": maybe(st.lists(adapter, max_size=12)),
        "template": st.just({"spec": {"containers": [{"name": "c", "image": "i"}]}}) | json_values,
    },
)
urls = st.sampled_from(
    [
        "https://example.com/d.parquet",
        "http://127.0.0.1/x",
        "http://169.254.169.254/",
        "ftp://x/y",
        "not a url",
        "http://10.0.0.1/a",
        "https://[::1]/x",
    ]
)
tuning = st.fixed_dictionaries(
    {},
    optional={
        "preset": maybe(st.fixed_dictionaries({"name": names})),
        "method": st.sampled_from(["lora", "qlora", "full", 3]),
        "input": maybe(
            st.fixed_dictionaries({"urls": st.lists(urls, max_size=3)})
            | st.fixed_dictionaries({"image": st.just("r.io/in:1")})
        ),
        "output": maybe(
            st.fixed_dictionaries(
                {"image": st.just("r.io/out:1")}, optional={"imagePushSecret": st.just("push")}
            )
        ),
    },
)
resource = st.fixed_dictionaries(
    {"labelSelector": maybe(st.just({"matchLabels": {"apps": "x"}}))},
    optional={
        "instanceType": maybe(skus),
        "count": maybe(st.integers(-2, 20)),
        "preferredNodes": maybe(st.lists(st.text(max_size=5), max_size=3)),
    },
)
annotation_keys = st.sampled_from(
    [
        ANNOTATION_BYPASS,
        ANNOTATION_CATALOG_REVISION,
        ANNOTATION_RUNTIME,
        ANNOTATION_MAX_MODEL_LEN,
        "example.com/other",
    ]
)
metadata = st.fixed_dictionaries(
    {"name": maybe(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))},
    optional={
        "annotations": maybe(
            st.dictionaries(
                annotation_keys,
                st.sampled_from(["true", "vllm", "transformers", "2048", "x", ""]),
                max_size=3,
            )
        )
    },
)
workspaces = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["kaito.sh/v1alpha1", "kaito.sh/v1beta1"]),
        "kind": st.just("Workspace"),
        "metadata": metadata,
    },
    optional={
        "resource": maybe(resource),
        "inference": maybe(inference),
        "tuning": maybe(tuning),
        "status": json_values,
        "extra": json_values | hostile,
    },
)
operations = st.sampled_from(["CREATE", "CREATE", "UPDATE", "UPDATE", "DELETE", "CONNECT"])
