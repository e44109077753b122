"""Validation: every rule, all errors at once, as (path, type) pairs."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import pytest

from presets.catalog import Catalog
from presets.expand import expand_object
from presets.validate import ValidationOptions, validate_object, warnings_for
from tests.presets.factories import Doc, inference_ws, tuning_ws
from tests.presets.factories import drop_path as _drop
from tests.presets.factories import set_path as _set

ADAPTER = {"source": {"name": "a1", "image": "registry.example.com/a1:1"}, "strength": "0.5"}

INFERENCE_CASES = [
    pytest.param(
        _set("inference.preset.name", "phi-3-mini-4k-instrct"),
        [("inference.preset.name", "NotSupported")],
        id="preset-typo",
    ),
    pytest.param(
        _drop("inference.preset"), [("inference.preset", "Required")], id="no-preset-no-template"
    ),
    pytest.param(
        _set("inference.template", {"spec": {}}),
        [("inference.template", "Forbidden")],
        id="preset-and-template",
    ),
    pytest.param(
        _set("tuning", tuning_ws()["tuning"]), [("tuning", "Forbidden")], id="inference-and-tuning"
    ),
    pytest.param(
        _set("resource.instanceType", "Standard_NC6s_v9"),
        [("resource.instanceType", "NotSupported")],
        id="unknown-sku",
    ),
    pytest.param(
        _set("metadata.annotations", {"kaito.sh/provisioner": "gke"}),
        [("metadata.annotations[kaito.sh/provisioner]", "NotSupported")],
        id="unknown-provisioner",
    ),
    pytest.param(
        _set("metadata.annotations", {"kaito.sh/provisioner": " BYO "}), [],
        id="provisioner-in-any-case",
    ),
    pytest.param(
        _drop("resource.instanceType"), [("resource.instanceType", "Required")], id="no-sku"
    ),
    pytest.param(
        _drop("resource.labelSelector"), [("resource.labelSelector", "Required")], id="no-selector"
    ),
    pytest.param(
        _set("resource.labelSelector", {"matchLabels": {"kaito.sh/workspace": "x"}}),
        [("resource.labelSelector.matchLabels", "Invalid")],
        id="reserved-labels-only",
    ),
    pytest.param(  # upstream Kaito's reserved set, not only the two workspace keys
        _set("resource.labelSelector", {"matchLabels": {
            "karpenter.kaito.sh/inferenceset": "x",
            "karpenter.kaito.sh/inferenceset-namespace": "ns",
            "kaito.sh/ragengine": "r",
        }}),
        [("resource.labelSelector.matchLabels", "Invalid")],
        id="reserved-karpenter-and-ragengine-labels-only",
    ),
    pytest.param(
        _set("resource.labelSelector", {"matchExpressions": [{"key": "a", "operator": "Near"}]}),
        [("resource.labelSelector.matchExpressions[0].operator", "NotSupported")],
        id="bad-operator",
    ),
    pytest.param(_set("resource.count", 0), [("resource.count", "Invalid")], id="zero-count"),
    pytest.param(_set("resource.count", "1"), [("resource.count", "Invalid")], id="string-count"),
    pytest.param(_set("metadata.name", "Bad_Name"), [("metadata.name", "Invalid")], id="bad-name"),
    pytest.param(_set("metadata.name", "a" * 64), [("metadata.name", "TooLong")], id="long-name"),
    pytest.param(_drop("metadata.name"), [("metadata.name", "Required")], id="no-name"),
    pytest.param(
        _set("apiVersion", "kaito.sh/v2"), [("apiVersion", "NotSupported")], id="bad-version"
    ),
    pytest.param(
        _set("inference.preset.accessMode", "secret"),
        [("inference.preset.accessMode", "NotSupported")],
        id="bad-access-mode",
    ),
    pytest.param(
        _set("inference.preset.accessMode", "private"),
        [("inference.preset.presetOptions.image", "Required")],
        id="private-needs-image",
    ),
    pytest.param(
        _set("metadata.annotations", {"kaito.sh/max-model-len": "8192"}),
        [("metadata.annotations[kaito.sh/max-model-len]", "Invalid")],
        id="context-too-long",
    ),
    pytest.param(
        _set("metadata.annotations", {"kaito.sh/max-model-len": "-1"}),
        [("metadata.annotations[kaito.sh/max-model-len]", "Invalid")],
        id="negative-context",
    ),
    pytest.param(
        _set("metadata.annotations", {"kaito.sh/runtime": "tgi"}),
        [("metadata.annotations[kaito.sh/runtime]", "NotSupported")],
        id="bad-runtime",
    ),
    pytest.param(
        _set("inference.adapters", [copy.deepcopy(ADAPTER) for _ in range(11)]),
        [("inference.adapters", "TooMany")]
        + [(f"inference.adapters[{i}].source.name", "Duplicate") for i in range(1, 11)],
        id="eleven-adapters",
    ),
    pytest.param(
        _set(
            "inference.adapters",
            [ADAPTER, {"source": {"name": "a2", "image": "r.example.com/a:1"}, "strength": "1.5"}],
        ),
        [("inference.adapters[1].strength", "Invalid")],
        id="strength-above-one",
    ),
    pytest.param(
        _set("inference.adapters", [{**ADAPTER, "strength": "strong"}]),
        [("inference.adapters[0].strength", "Invalid")],
        id="strength-not-decimal",
    ),
    pytest.param(
        _set("inference.adapters", [{"source": {"name": "a1"}}]),
        [("inference.adapters[0].source.image", "Required")],
        id="adapter-without-image",
    ),
    pytest.param(
        _set("inference.adapters", [{"source": {"image": "r.example.com/a:1"}}]),
        [("inference.adapters[0].source.name", "Required")],
        id="adapter-without-name",
    ),
    pytest.param(
        _set("inference.adapters", [{"strength": "1"}]),
        [("inference.adapters[0].source", "Required")],
        id="adapter-without-source",
    ),
    pytest.param(
        _set("inference.preset.name", "llama-3.3-70b-instruct"),
        [
            ("inference.preset.presetOptions.modelAccessSecret", "Required"),
            ("resource.instanceType", "Invalid"),
        ],
        id="llama70b-on-v100",
    ),
    pytest.param(
        _set("resource.partition", {"mode": "slices"}),
        [("resource.partition", "Forbidden"), ("resource.partition.mode", "NotSupported")],
        id="partition-with-sku",
    ),
]


@pytest.mark.parametrize(("change", "expected"), INFERENCE_CASES)
def test_inference_rules(
    catalog: Catalog, change: Callable[[Doc], None], expected: list[tuple[str, str]]
) -> None:
    doc = inference_ws()
    change(doc)
    errors = validate_object(expand_object(doc, catalog), catalog)
    assert [(e.path, e.type) for e in errors] == expected, [str(e) for e in errors]


TUNING_CASES = [
    pytest.param(
        _set("tuning.method", "full"), [("tuning.method", "NotSupported")], id="bad-method"
    ),
    pytest.param(_drop("tuning.method"), [("tuning.method", "Required")], id="no-method"),
    pytest.param(
        _set("tuning.preset.name", "gpt-oss-20b"),
        [("tuning.preset.name", "NotSupported")],
        id="preset-cannot-tune",
    ),
    pytest.param(_set("tuning.input", {}), [("tuning.input", "Required")], id="no-input-kind"),
    pytest.param(
        _set("tuning.input.image", "r.example.com/data:1"),
        [("tuning.input", "Invalid")],
        id="two-input-kinds",
    ),
    pytest.param(
        _set("tuning.output.volumeSource", {"emptyDir": {}}),
        [("tuning.output", "Invalid")],
        id="two-output-kinds",
    ),
    pytest.param(
        _drop("tuning.output.imagePushSecret"),
        [("tuning.output.imagePushSecret", "Required")],
        id="image-needs-push-secret",
    ),
    pytest.param(_drop("tuning.output"), [("tuning.output", "Required")], id="no-output"),
    pytest.param(
        _set("resource.count", 2), [("resource.count", "Invalid")], id="tuning-on-two-nodes"
    ),
    pytest.param(
        _set(
            "tuning.input.urls", ["ftp://example.com/d", "http://169.254.169.254/latest/meta-data"]
        ),
        [("tuning.input.urls[0]", "Invalid"), ("tuning.input.urls[1]", "Invalid")],
        id="bad-urls",
    ),
]


@pytest.mark.parametrize(("change", "expected"), TUNING_CASES)
def test_tuning_rules(
    catalog: Catalog, change: Callable[[Doc], None], expected: list[tuple[str, str]]
) -> None:
    doc = tuning_ws()
    change(doc)
    errors = validate_object(expand_object(doc, catalog), catalog)
    assert [(e.path, e.type) for e in errors] == expected, [str(e) for e in errors]


def test_valid_workspaces_have_no_errors(catalog: Catalog) -> None:
    for doc in (
        inference_ws(),
        tuning_ws(),
        inference_ws("smollm2-135m-instruct", "Standard_D4s_v3"),
        inference_ws("llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4"),
    ):
        if doc.get("inference", {}).get("preset", {}).get("name") == "llama-3.3-70b-instruct":
            doc["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf"}
        assert validate_object(expand_object(doc, catalog), catalog) == []


def test_the_bypass_annotation_and_preferred_nodes_allow_unknown_skus(catalog: Catalog) -> None:
    bypass = inference_ws(
        instance_type="Standard_NC999",
        metadata={"name": "a", "annotations": {"kaito.sh/bypass-resource-checks": "true"}},
    )
    byo = inference_ws(instance_type="Standard_NC999")
    byo["resource"]["preferredNodes"] = ["node-1"]
    for doc in (bypass, byo):
        assert validate_object(expand_object(doc, catalog), catalog) == []
        assert any("not a known instance type" in w for w in warnings_for(doc, catalog))


def test_hugging_face_ids_are_accepted_with_a_warning(catalog: Catalog) -> None:
    doc = expand_object(inference_ws("microsoft/Phi-3-mini-4k-instruct-custom"), catalog)
    assert validate_object(doc, catalog) == []
    assert any("cannot be checked offline" in w for w in warnings_for(doc, catalog))


def test_count_below_the_needed_nodes_points_at_count(catalog: Catalog) -> None:
    doc = inference_ws("llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4")
    doc["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf"}
    doc["resource"]["count"] = 1
    errors = validate_object(expand_object(doc, catalog), catalog)
    assert [(e.path, e.type) for e in errors] == [("resource.count", "Invalid")]
    assert "it needs 2 nodes" in errors[0].message


def test_max_nodes_is_an_option(catalog: Catalog) -> None:
    doc = inference_ws("llama-3.3-70b-instruct", "Standard_NV36ads_A10_v5")
    doc["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf"}
    tight = validate_object(doc, catalog, options=ValidationOptions(max_nodes=4))
    assert [(e.path, e.type) for e in tight] == [("resource.instanceType", "Invalid")]
    assert validate_object(doc, catalog) == []


def test_vllm_serves_a_transformers_preset_only_from_its_cpu_image_on_a_cpu_node(
        catalog: Catalog) -> None:
    """kaito.sh/runtime: vllm on SmolLM2 (catalog vllmOnCpu) runs vLLM's CPU build; it is
    refused on GPUs, without a known instance type, and for presets the catalog keeps on
    the transformers runtime."""
    vllm = {"name": "a", "annotations": {"kaito.sh/runtime": "vllm"}}
    ok = inference_ws("smollm2-135m-instruct", "Standard_D4s_v3", metadata=vllm)
    assert validate_object(expand_object(ok, catalog), catalog) == []

    def refusal(doc: Doc, cat: Catalog = catalog, **options: bool) -> str:
        errors = validate_object(expand_object(doc, cat), cat,
                                 options=ValidationOptions(**options))
        found = [e for e in errors if e.path == "metadata.annotations[kaito.sh/runtime]"]
        assert [e.type for e in found] == ["Invalid"], [str(e) for e in errors]
        return found[0].message

    gpu = inference_ws("smollm2-135m-instruct", "Standard_NC24ads_A100_v4", metadata=vllm)
    assert "instance type Standard_NC24ads_A100_v4 has GPUs" in refusal(gpu)
    byo = inference_ws("smollm2-135m-instruct", metadata=vllm)
    del byo["resource"]["instanceType"]
    assert "name a CPU-only resource.instanceType" in refusal(byo, require_instance_type=False)
    model = catalog.models["smollm2-135m-instruct"]
    kept = dataclasses.replace(catalog, models={
        **catalog.models, model.name: dataclasses.replace(model, vllm_on_cpu=False)})
    assert refusal(ok, kept) == "preset smollm2-135m-instruct runs only on the transformers runtime"
