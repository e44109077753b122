"""Expansion adds only absent fields, is idempotent, and resolve() trusts the object first."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crds.workspace import parse_workspace, parse_workspace_lenient
from presets.catalog import Catalog, load_catalog
from presets.expand import expand, expand_object, resolve
from presets.fit import fit_report
from tests.presets.factories import EXAMPLES, inference_ws, tuning_ws
from tests.support.golden import check_golden

GOLDEN = Path(__file__).parent / "golden"
CATALOG = load_catalog()
PRESETS = sorted(CATALOG.models)
TUNABLE = sorted(m.name for m in CATALOG.models.values() if m.tuning)
PRIVATE = sorted(m.name for m in CATALOG.models.values() if m.access == "private")
OWN_IMAGE = "registry.example.com/own-weights:1"


def _cheapest_sku(preset: str) -> str:
    report = fit_report(preset, "Standard_NC6s_v3", catalog=CATALOG, count=1)
    return report.instance_type if report.fits else report.suggestions[0]


def _inference_ws(preset: str) -> dict[str, Any]:
    doc = inference_ws(preset, _cheapest_sku(preset))
    if CATALOG.models[preset].access == "private":  # the user brings the image
        doc["inference"]["preset"]["presetOptions"] = {"image": OWN_IMAGE}
    return doc


@pytest.mark.parametrize("preset", PRESETS)
def test_inference_expansion_golden(preset: str, update_golden: bool) -> None:
    expanded = expand_object(_inference_ws(preset), CATALOG)
    check_golden(GOLDEN / f"inference-{preset}.yaml", expanded, update=update_golden)


@pytest.mark.parametrize("preset", PRIVATE)
def test_private_presets_get_private_access_and_keep_the_users_image(
    preset: str, catalog: Catalog
) -> None:
    expanded = expand_object(_inference_ws(preset), catalog)
    assert expanded["inference"]["preset"]["accessMode"] == "private"
    assert expanded["inference"]["preset"]["presetOptions"] == {"image": OWN_IMAGE}
    assert resolve(parse_workspace(expanded), catalog).image == OWN_IMAGE
    bare = expand_object(inference_ws(preset, "Standard_NC24ads_A100_v4"), catalog)
    assert bare["inference"]["preset"] == {"name": preset, "accessMode": "private"}
    assert resolve(parse_workspace(bare), catalog).image is None


def test_a_private_preset_gets_no_image_of_ours_on_another_runtime(catalog: Catalog) -> None:
    doc = inference_ws(
        "llama-2-7b",
        "Standard_NC24ads_A100_v4",
        metadata={"name": "ws", "annotations": {"kaito.sh/runtime": "transformers"}},
    )
    expanded = expand_object(doc, catalog)
    assert "presetOptions" not in expanded["inference"]["preset"]


def test_upstream_counts_for_the_largest_presets_are_kept_and_computed(catalog: Catalog) -> None:
    for preset in ("deepseek-r1-0528", "deepseek-v3-0324", "mistral-large-3-675b-instruct"):
        computed = expand_object(inference_ws(preset, "Standard_NC80adis_H100_v5"), catalog)
        assert computed["resource"]["count"] == 5
        doc = inference_ws(preset, "Standard_NC80adis_H100_v5")
        doc["resource"]["count"] = 6
        kept = expand_object(doc, catalog)
        assert kept["resource"]["count"] == 6
        resolved = resolve(parse_workspace(kept), catalog)
        # every node the user pays for holds a pipeline stage: none sits idle
        assert (resolved.node_count, resolved.tensor_parallel_size) == (6, 2)
        assert resolved.pipeline_parallel_size == 6
        assert resolve(parse_workspace(computed), catalog).pipeline_parallel_size == 5
        assert resolved.image == catalog.images["vllm"]


@pytest.mark.parametrize("preset", TUNABLE)
def test_tuning_expansion_golden(preset: str, update_golden: bool) -> None:
    expanded = expand_object(tuning_ws(preset, _cheapest_sku(preset)), CATALOG)
    check_golden(GOLDEN / f"tuning-{preset}.yaml", expanded, update=update_golden)


@pytest.mark.parametrize(
    "name", ["kaito_workspace_phi_3.yaml", "kaito_workspace_phi_3_with_adapters.yaml"]
)
def test_seed_inference_examples_get_one_node_and_a_pinned_image(
    name: str, catalog: Catalog
) -> None:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    expanded = expand_object(doc, catalog)
    assert expanded["resource"]["count"] == 1
    image = expanded["inference"]["preset"]["presetOptions"]["image"]
    assert image == catalog.images["vllm"]
    assert not image.endswith(":latest")
    assert expanded["metadata"]["annotations"]["kaito.sh/catalog-revision"] == catalog.revision


def test_llama70b_on_two_gpu_a100_nodes_gets_two_nodes(catalog: Catalog) -> None:
    expanded = expand_object(
        inference_ws("llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4"), catalog
    )
    assert expanded["resource"]["count"] == 2


def test_values_the_user_wrote_are_never_changed(catalog: Catalog) -> None:
    doc = inference_ws(
        "phi-3-mini-4k-instruct",
        metadata={
            "name": "mine",
            "annotations": {"kaito.sh/runtime": "transformers", "kaito.sh/max-model-len": "1024"},
        },
    )
    doc["resource"]["count"] = 3
    doc["inference"]["preset"].update(
        accessMode="private", presetOptions={"image": "example.com/own:1"}
    )
    doc["inference"]["adapters"] = [{"source": {"name": "a", "image": "example.com/a:1"}}]
    expanded = expand_object(doc, catalog)
    added = expanded["metadata"]["annotations"].pop("kaito.sh/catalog-revision")
    assert added == catalog.revision
    assert expanded == doc


def test_unparseable_objects_come_back_unchanged(catalog: Catalog) -> None:
    doc: dict[str, Any] = {"resource": {"count": "two"}, "inference": {"preset": {"name": "phi-4"}}}
    assert expand_object(doc, catalog) == doc


def test_unknown_hf_models_get_one_node_and_the_generic_image(catalog: Catalog) -> None:
    expanded = expand_object(inference_ws("someorg/some-model"), catalog)
    assert expanded["resource"]["count"] == 1
    assert expanded["inference"]["preset"]["presetOptions"]["image"] == catalog.images["vllm"]
    assert "kaito.sh/max-model-len" not in expanded["metadata"]["annotations"]


def test_resolve_reads_the_object_before_the_catalog(catalog: Catalog) -> None:
    expanded = expand_object(inference_ws("phi-3-mini-4k-instruct"), catalog)
    phi = catalog.models["phi-3-mini-4k-instruct"]
    upgraded = replace(
        catalog,
        revision="next",
        models={
            **catalog.models,
            phi.name: replace(phi, image="ghcr.io/kaito-py/vllm-runtime:9.9.9"),
        },
    )
    resolved = resolve(parse_workspace(expanded), upgraded)
    assert resolved.image == catalog.images["vllm"]
    assert resolved.node_count == 1
    assert expand_object(expanded, upgraded) == expanded
    fresh = resolve(parse_workspace(inference_ws("phi-3-mini-4k-instruct")), upgraded)
    assert fresh.image == "ghcr.io/kaito-py/vllm-runtime:9.9.9"


def test_resolve_for_tuning_and_cpu(catalog: Catalog) -> None:
    tune = resolve(parse_workspace(expand_object(tuning_ws(), catalog)), catalog)
    assert (tune.workload, tune.runtime, tune.image, tune.node_count) == (
        "tuning",
        "transformers",
        catalog.images["tuning"],
        1,
    )
    cpu = resolve(
        parse_workspace(
            expand_object(inference_ws("smollm2-135m-instruct", "Standard_D4s_v3"), catalog)
        ),
        catalog,
    )
    assert (cpu.runtime, cpu.gpus_per_node, cpu.image, cpu.max_model_len) == (
        "transformers",
        0,
        catalog.images["transformers"],
        4096,
    )


def _workspaces() -> st.SearchStrategy[dict[str, Any]]:
    skus = st.sampled_from(sorted(CATALOG.instance_types))
    annotations = st.dictionaries(
        st.sampled_from(
            [
                "kaito.sh/runtime",
                "kaito.sh/max-model-len",
                "team",
                "kaito.sh/bypass-resource-checks",
            ]
        ),
        st.sampled_from(["vllm", "transformers", "2048", "x", ""]),
        max_size=3,
    )

    def build(
        kind: str, preset: str, sku: str, count: int | None, notes: dict[str, str]
    ) -> dict[str, Any]:
        doc = inference_ws(preset, sku) if kind == "inference" else tuning_ws(preset, sku)
        if count is not None:
            doc["resource"]["count"] = count
        if notes:
            doc["metadata"]["annotations"] = notes
        return doc

    return st.builds(
        build,
        st.sampled_from(["inference", "tuning"]),
        st.sampled_from([*PRESETS, "org/custom-model"]),
        skus,
        st.one_of(st.none(), st.integers(1, 4)),
        annotations,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_workspaces())
def test_expansion_is_idempotent_and_add_only(doc: dict[str, Any]) -> None:
    before = copy.deepcopy(doc)
    once = expand_object(doc, CATALOG)
    assert doc == before, "the input must not be modified"
    assert expand_object(once, CATALOG) == once
    _assert_contains(once, before)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_workspaces())
def test_the_typed_expansion_is_the_parse_of_the_expanded_object(doc: dict[str, Any]) -> None:
    result = expand(doc, CATALOG)
    parsed, errors = parse_workspace_lenient(result.obj)
    assert (result.ws, result.errors) == (parsed, errors)


def test_the_typed_expansion_matches_on_every_example() -> None:
    docs = [d for p in sorted(EXAMPLES.rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    workspaces = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Workspace"]
    assert workspaces
    for doc in workspaces:
        result = expand(doc, CATALOG)
        assert result.ws == parse_workspace_lenient(result.obj)[0], doc["metadata"]["name"]


def _assert_contains(big: Any, small: Any) -> None:
    if isinstance(small, dict):
        assert isinstance(big, dict)
        for key, value in small.items():
            _assert_contains(big[key], value)
    else:
        assert big == small
