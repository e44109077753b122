"""No annotation and no unknown preset or SKU lifts the maximum node count (issue L, item 4).

Before issue L the count check lived inside the GPU-fit rule, which returns early for the
bypass annotation, Hugging Face ids, templates and unknown SKUs: `count: 10000` passed and
the reconciler would have asked for 10000 nodes.
"""

from __future__ import annotations

from typing import Any

import pytest

from presets.catalog import Catalog
from presets.validate import ValidationOptions, validate_object
from tests.presets.factories import inference_ws, tuning_ws


def _bypass(ws: dict[str, Any]) -> dict[str, Any]:
    ws["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": "true"}
    return ws


def _template(ws: dict[str, Any]) -> dict[str, Any]:
    ws["inference"] = {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}
    return ws


def _hf_id(ws: dict[str, Any]) -> dict[str, Any]:
    ws["inference"]["preset"]["name"] = "someone/some-model"
    return ws


def _unknown_sku(ws: dict[str, Any]) -> dict[str, Any]:
    ws["resource"]["instanceType"] = "Standard_Unlisted_v9"
    return _bypass(ws)


@pytest.mark.parametrize("shape", [_bypass, _template, _hf_id, _unknown_sku],
                         ids=["bypass-annotation", "template", "hugging-face-id", "unknown-sku"])
def test_a_count_over_the_cap_is_refused_whatever_the_workspace(
    catalog: Catalog, shape: Any,
) -> None:
    ws = shape(inference_ws())
    ws["resource"]["count"] = 10_000
    errors = validate_object(ws, catalog)
    assert ("resource.count", "Invalid") in [(e.path, e.type) for e in errors]
    assert any("at most 8 nodes" in e.message for e in errors)


def test_the_cap_is_the_validation_option(catalog: Catalog) -> None:
    ws = _bypass(inference_ws())
    ws["resource"]["count"] = 3
    assert validate_object(ws, catalog, options=ValidationOptions(max_nodes=4)) == []
    refused = validate_object(ws, catalog, options=ValidationOptions(max_nodes=2))
    assert [(e.path, e.type) for e in refused] == [("resource.count", "Invalid")]


def test_one_refusal_not_two_for_a_known_preset_over_the_cap(catalog: Catalog) -> None:
    ws = inference_ws()
    ws["resource"]["count"] = 9
    assert [(e.path, e.type) for e in validate_object(ws, catalog)] == [
        ("resource.count", "Invalid")]


def test_tuning_keeps_its_one_node_rule(catalog: Catalog) -> None:
    ws = tuning_ws()
    ws["resource"]["count"] = 20
    paths = [(e.path, e.type) for e in validate_object(ws, catalog)]
    assert ("resource.count", "Invalid") in paths
