"""The serving layout: data, tensor or pipeline parallel, and the context that fits."""

from __future__ import annotations

import pytest

from presets.catalog import Catalog, InstanceType, ModelSpec
from presets.fit import fit_report
from presets.layout import (
    CONTEXT_STEP,
    DEFAULT_MAX_MODEL_LEN,
    cpu_kv_cache_gib,
    engine_need_gib,
    layout,
    usable_gib,
)

A100 = "Standard_NC24ads_A100_v4"  # 1 x A100 80 GiB
A100X4 = "Standard_NC96ads_A100_v4"
V100 = "Standard_NC6s_v3"


def _pair(catalog: Catalog, model: str, sku: str) -> tuple[ModelSpec, InstanceType]:
    spec, found = catalog.model(model), catalog.instance_type(sku)
    assert spec is not None
    assert found is not None
    return spec, found


@pytest.mark.parametrize(
    ("model", "sku", "shape"),
    [
        # (nodes, tensor parallel, pipeline parallel, data parallel)
        pytest.param("phi-3-mini-4k-instruct", A100X4, (1, 1, 1, 4), id="small-model-4-gpus"),
        pytest.param("phi-3-mini-4k-instruct", A100, (1, 1, 1, 1), id="small-model-1-gpu"),
        pytest.param("qwen2.5-coder-32b-instruct", A100X4, (1, 2, 1, 2), id="32b-tp2-dp2"),
        pytest.param("llama-3.3-70b-instruct", A100X4, (1, 4, 1, 1), id="70b-tp4"),
        pytest.param(
            "llama-3.3-70b-instruct", "Standard_ND96isr_H100_v5", (1, 4, 1, 2), id="70b-8xh100"
        ),
        pytest.param(
            "llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4", (2, 2, 2, 1), id="70b-pp2"
        ),
        pytest.param("falcon-7b", A100X4, (1, 1, 1, 4), id="71-heads-never-split"),
    ],
)
def test_the_layout_splits_a_model_only_as_far_as_needed(
    catalog: Catalog, model: str, sku: str, shape: tuple[int, int, int, int]
) -> None:
    lay = layout(*_pair(catalog, model, sku))
    got = (lay.nodes, lay.tensor_parallel, lay.pipeline_parallel, lay.data_parallel)
    assert got == shape, lay.why


def test_a_small_model_on_a_four_gpu_node_is_served_data_parallel_and_says_why(
    catalog: Catalog,
) -> None:
    report = fit_report("phi-3-mini-4k-instruct", A100X4, catalog=catalog)
    assert report.fits
    assert (report.tensor_parallel_size, report.data_parallel_size) == (1, 4)
    assert report.layout == "data-parallel 4 x 1 GPU"
    for fragment in (
        "data-parallel 4 x 1 GPU",
        "take at most half of one GPU (36.0 GiB)",
        "each of the node's 4 engines runs on one GPU",
    ):
        assert fragment in report.message, report.message


def test_tensor_parallel_when_the_weights_need_more_than_half_a_gpu(catalog: Catalog) -> None:
    report = fit_report("qwen2.5-coder-32b-instruct", A100X4, catalog=catalog)
    assert report.layout == "data-parallel 2 x tensor-parallel 2 GPUs"
    assert "take at most half of 2 GPUs" in report.message
    pipeline = fit_report("llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4", catalog=catalog)
    assert pipeline.layout == "pipeline-parallel 2 nodes x 2 GPUs"
    assert "does not fit one node" in pipeline.message


def test_a_128k_model_on_a_large_gpu_is_served_far_beyond_4096(catalog: Catalog) -> None:
    model, sku = _pair(catalog, "phi-3-mini-128k-instruct", A100)
    lay = layout(model, sku)
    assert lay.max_model_len == model.context_length == 131072
    assert lay.context_fitted
    report = fit_report(model, sku, catalog=catalog)
    assert report.max_model_len == 131072
    assert "serves 131072 tokens of context (the model's full context)" in report.message


def test_the_served_context_is_the_most_the_memory_left_holds(catalog: Catalog) -> None:
    model, sku = _pair(catalog, "phi-3-mini-128k-instruct", V100)
    lay = layout(model, sku)
    assert DEFAULT_MAX_MODEL_LEN < lay.max_model_len < model.context_length
    assert lay.max_model_len % CONTEXT_STEP == 0
    assert engine_need_gib(model, lay.max_model_len, 1) <= usable_gib(sku)
    assert engine_need_gib(model, lay.max_model_len + CONTEXT_STEP, 1) > usable_gib(sku)
    report = fit_report(model, sku, catalog=catalog)
    assert f"serves {lay.max_model_len} tokens of context (the most that fits" in report.message


def test_an_explicit_context_is_honoured_and_fit_checked(catalog: Catalog) -> None:
    model, sku = _pair(catalog, "phi-3-mini-128k-instruct", V100)
    short = layout(model, sku, max_model_len=2048)
    assert (short.max_model_len, short.context_fitted, short.nodes) == (2048, False, 1)
    full = layout(model, sku, max_model_len=131072)
    assert full.nodes > 1, "the full context does not fit one V100"
    refused = fit_report(model, sku, catalog=catalog, max_model_len=131072, count=1)
    assert not refused.fits
    assert "KV cache for 131072 tokens" in refused.message


def test_more_nodes_than_needed_are_replicas_of_a_one_node_layout(catalog: Catalog) -> None:
    lay = layout(*_pair(catalog, "phi-3-mini-4k-instruct", A100), count=3)
    assert (lay.nodes, lay.node_count, lay.replicas, lay.pipeline_parallel) == (1, 3, 3, 1)
    assert lay.summary() == "1 GPU, 3 replicas"


def test_a_refused_layout_keeps_the_sizing_context(catalog: Catalog) -> None:
    lay = layout(*_pair(catalog, "deepseek-r1-0528", "Standard_NC80adis_H100_v5"), count=4)
    assert (lay.nodes, lay.node_count) == (5, 4)
    assert lay.max_model_len == DEFAULT_MAX_MODEL_LEN


def test_a_cpu_node_runs_the_transformers_runtime(catalog: Catalog) -> None:
    lay = layout(*_pair(catalog, "smollm2-135m-instruct", "Standard_D4s_v3"))
    assert (lay.nodes, lay.kind, lay.summary()) == (1, "cpu", "cpu")


def test_vllm_on_cpu_gets_kv_cache_room_for_four_full_sequences_in_float32(
        catalog: Catalog) -> None:
    small, bigger = catalog.models["smollm2-135m-instruct"], catalog.models["smollm2-360m-instruct"]
    # 2 x 32 layers x 5 KV heads x 64 x 4 bytes = 80 KiB a token; x 4096 x 4 = 1.25 GiB
    assert (cpu_kv_cache_gib(small, 4096), cpu_kv_cache_gib(bigger, 4096)) == (1, 2)
    assert cpu_kv_cache_gib(bigger, 8192) == 3
    # that room is part of what the node's RAM must hold: 0.67 x 2 + 2 + 2 GiB > 4 GiB
    tight = InstanceType(name="tiny", cloud="azure", gpu_model=None, gpu_count=0,
                         gpu_memory_gib=0, vcpu=2, memory_gib=4, relative_cost=1)
    assert layout(bigger, tight).nodes == 0


def test_the_stored_context_gives_back_the_same_layout(catalog: Catalog) -> None:
    """expand writes the fitted context and node count into the object; resolving the
    stored object must lay the model out exactly as before, for every fitting pair."""
    checked = 0
    for model in catalog.models.values():
        for sku in catalog.instance_types.values():
            first = layout(model, sku)
            if not first.nodes or not sku.gpu_count:
                continue
            again = layout(model, sku, max_model_len=first.max_model_len, count=first.nodes)
            shape = (first.nodes, first.tensor_parallel, first.pipeline_parallel)
            assert shape == (again.nodes, again.tensor_parallel, again.pipeline_parallel), (
                model.name,
                sku.name,
            )
            assert first.data_parallel == again.data_parallel
            checked += 1
    assert checked > 500
