"""Validation beyond single fields: data URLs, updates, and hostile input."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presets.catalog import Catalog, load_catalog
from presets.expand import expand_object
from presets.validate import validate_object, warnings_for
from presets.validate.net import url_problem
from tests.presets.factories import Doc, inference_ws, tuning_ws
from tests.presets.factories import set_path as _set


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/data",
        "http://localhost:8080/x",
        "http://10.0.0.1/data",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest",
        "http://[::1]/data",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://metadata.google.internal/x",
        "http://100.64.0.1/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "file:///etc/passwd",
        "gopher://x/",
        "http://a.localhost/",
        "http://[::1",
        "https://",
    ],
)
def test_urls_that_reach_inside_are_refused(url: str) -> None:
    assert url_problem(url) is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/datasets/x/resolve/main/a.parquet",
        "http://8.8.8.8/data",
        "https://[2606:4700::1111]/x",
    ],
)
def test_public_urls_are_accepted(url: str) -> None:
    assert url_problem(url) is None


UPDATE_CASES = [
    pytest.param(
        _set("resource.instanceType", "Standard_NC24ads_A100_v4"),
        [("resource.instanceType", "Invalid")],
        id="sku",
    ),
    pytest.param(
        _set("resource.labelSelector", {"matchLabels": {"apps": "other"}}),
        [("resource.labelSelector", "Invalid")],
        id="selector",
    ),
    pytest.param(
        _set("inference.preset.name", "phi-3-mini-128k-instruct"),
        [("inference.preset.name", "Invalid")],
        id="preset",
    ),
]


@pytest.mark.parametrize(("change", "expected"), UPDATE_CASES)
def test_immutable_fields(
    catalog: Catalog, change: Callable[[Doc], None], expected: list[tuple[str, str]]
) -> None:
    old = expand_object(inference_ws(), catalog)
    new = copy.deepcopy(old)
    change(new)
    errors = validate_object(new, catalog, old=old)
    assert [(e.path, e.type) for e in errors] == expected


def test_switching_between_inference_and_tuning_is_forbidden(catalog: Catalog) -> None:
    old = expand_object(inference_ws(), catalog)
    new = expand_object(
        {**tuning_ws(), "metadata": old["metadata"], "resource": old["resource"]}, catalog
    )
    new["resource"]["count"] = 1
    errors = validate_object(new, catalog, old=old)
    assert [(e.path, e.type) for e in errors] == [
        ("inference", "Forbidden"),
        ("tuning", "Forbidden"),
    ]


def test_tuning_method_is_immutable(catalog: Catalog) -> None:
    old = expand_object(tuning_ws(), catalog)
    new = copy.deepcopy(old)
    new["tuning"]["method"] = "lora"
    assert [(e.path, e.type) for e in validate_object(new, catalog, old=old)] == [
        ("tuning.method", "Invalid")
    ]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "metadata",
        "resource",
        "inference",
        "tuning",
        "status",
        "name",
        "preset",
        "adapters",
        "source",
        "strength",
        "input",
        "output",
        "urls",
        "count",
        "instanceType",
        "labelSelector",
        "matchLabels",
        "matchExpressions",
        "partition",
        "presetOptions",
        "template",
        "method",
        "annotations",
        "image",
    ]
)
SHAPED = st.recursive(
    JSON,
    lambda inner: st.dictionaries(KEYS, inner, max_size=6) | st.lists(inner, max_size=3),
    max_leaves=40,
)
FUZZ_CATALOG = load_catalog()


@settings(max_examples=300, deadline=None)
@given(SHAPED, st.one_of(st.none(), SHAPED))
def test_validation_never_raises(obj: Any, old: Any) -> None:
    errors = validate_object(obj, FUZZ_CATALOG, old=old)
    assert isinstance(errors, list)
    warnings_for(obj, FUZZ_CATALOG, old=old)
    if isinstance(obj, dict):
        expand_object(obj, FUZZ_CATALOG)
