"""Validation of preset blocks: deprecated presets, private presets, the largest presets."""

from __future__ import annotations

from typing import Any

import pytest

from presets.catalog import Catalog
from presets.expand import expand_object
from presets.validate import validate_object
from presets.validate.preset import supported_names
from tests.presets.factories import inference_ws, tuning_ws

OWN_IMAGE = "registry.example.com/llama-2:1"
H100X2 = "Standard_NC80adis_H100_v5"
PHI2_REFUSAL = (
    "phi-2 is deprecated and no longer supported; "
    "use phi-4-mini-instruct or phi-3.5-mini-instruct instead"
)


def _errors(doc: dict[str, Any], catalog: Catalog, *, expand: bool = True) -> list[str]:
    obj = expand_object(doc, catalog) if expand else doc
    return [f"{e.path} {e.type}: {e.message}" for e in validate_object(obj, catalog)]


def _with_options(doc: dict[str, Any], **options: str) -> dict[str, Any]:
    preset = doc["inference"]["preset"]
    mode = options.pop("accessMode", None)
    if mode is not None:
        preset["accessMode"] = mode
    if options:
        preset["presetOptions"] = options
    return doc


@pytest.mark.parametrize("expand", [True, False], ids=["expanded", "as-written"])
def test_phi2_is_refused_as_deprecated_with_its_replacements(
    catalog: Catalog, expand: bool
) -> None:
    errors = _errors(inference_ws("phi-2", "Standard_NC24ads_A100_v4"), catalog, expand=expand)
    assert errors == [f"inference.preset.name NotSupported: {PHI2_REFUSAL}"]


def test_tuning_phi2_is_refused_as_deprecated_too(catalog: Catalog) -> None:
    errors = _errors(tuning_ws("phi-2", "Standard_NC24ads_A100_v4"), catalog)
    assert errors == [f"tuning.preset.name NotSupported: {PHI2_REFUSAL}"]


def test_deprecated_presets_are_never_suggested(catalog: Catalog) -> None:
    assert "phi-2" not in supported_names(catalog, tuning=False)
    assert "phi-4" in supported_names(catalog, tuning=False)
    assert "llama-2-7b" in supported_names(catalog, tuning=False)
    assert "llama-2-7b" not in supported_names(catalog, tuning=True)
    errors = _errors(inference_ws("phi-3"), catalog)
    assert len(errors) == 1
    assert "unsupported inference preset 'phi-3'" in errors[0]
    assert "phi-2" not in errors[0]


@pytest.mark.parametrize(
    "preset", [f"llama-2-{s}{c}" for s in ("7b", "13b", "70b") for c in ("", "-chat")]
)
def test_a_private_preset_with_its_image_is_accepted(catalog: Catalog, preset: str) -> None:
    sku, count = (
        ("Standard_NC96ads_A100_v4", 2) if "70b" in preset else ("Standard_NC24ads_A100_v4", 1)
    )
    doc = _with_options(inference_ws(preset, sku), image=OWN_IMAGE)
    doc["resource"]["count"] = count
    assert _errors(doc, catalog) == []
    assert _errors(doc, catalog, expand=False) == []
    explicit = _with_options(inference_ws(preset, sku), accessMode="private", image=OWN_IMAGE)
    assert _errors(explicit, catalog) == []


@pytest.mark.parametrize("expand", [True, False], ids=["expanded", "as-written"])
def test_a_private_preset_without_an_image_is_refused(catalog: Catalog, expand: bool) -> None:
    doc = inference_ws("llama-2-7b", "Standard_NC24ads_A100_v4")
    assert _errors(doc, catalog, expand=expand) == [
        "inference.preset.presetOptions.image Required: preset llama-2-7b is private: "
        "presetOptions.image must name your image that holds its weights"
    ]


def test_a_private_preset_refuses_public_access(catalog: Catalog) -> None:
    doc = _with_options(
        inference_ws("llama-2-13b", "Standard_NC24ads_A100_v4"),
        accessMode="public",
        image=OWN_IMAGE,
    )
    assert _errors(doc, catalog) == [
        "inference.preset.accessMode NotSupported: preset llama-2-13b is private and only "
        "supports accessMode private: bring your own image with its weights in "
        "presetOptions.image"
    ]


def test_a_placeholder_image_is_refused_as_an_image_reference(catalog: Catalog) -> None:
    doc = _with_options(
        inference_ws("llama-2-7b", "Standard_NC24ads_A100_v4"),
        accessMode="private",
        image="<YOUR IMAGE URL>",
    )
    errors = _errors(doc, catalog)
    assert len(errors) == 1
    assert errors[0].startswith("inference.preset.presetOptions.image Invalid: '<YOUR IMAGE URL>'")


@pytest.mark.parametrize(
    ("preset", "sku", "count"),
    [
        ("deepseek-r1-0528", H100X2, 6),
        ("deepseek-v3-0324", H100X2, 6),
        ("mistral-large-3-675b-instruct", H100X2, 6),
        ("ministral-3-3b-instruct", "Standard_NV36ads_A10_v5", None),
        ("ministral-3-8b-instruct", "Standard_NC24ads_A100_v4", None),
        ("ministral-3-14b-instruct", "Standard_NC24ads_A100_v4", None),
    ],
)
def test_upstreams_examples_of_the_new_presets_are_accepted(
    catalog: Catalog, preset: str, sku: str, count: int | None
) -> None:
    doc = inference_ws(preset, sku)
    if count is not None:
        doc["resource"]["count"] = count
    assert _errors(doc, catalog) == []
    assert _errors(doc, catalog, expand=False) == []


def test_four_h100_pairs_are_too_few_for_deepseek_and_the_refusal_says_why(
    catalog: Catalog,
) -> None:
    doc = inference_ws("deepseek-r1-0528", H100X2)
    doc["resource"]["count"] = 4
    errors = validate_object(expand_object(doc, catalog), catalog)
    assert [(e.path, e.type) for e in errors] == [("resource.count", "Invalid")]
    for fragment in (
        "needs 699.1 GiB",
        "686.9 GiB weights",
        "offer 676.8 GiB usable",
        "it needs 5 nodes",
    ):
        assert fragment in errors[0].message, errors[0].message
