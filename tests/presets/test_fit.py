"""GPU fit: the numbers behind accept / reject and the node count."""

from __future__ import annotations

import pytest

from presets.catalog import Catalog
from presets.fit import UnknownNameError, fit_report, tensor_parallel_size

H100X2 = "Standard_NC80adis_H100_v5"  # 2 x H100 94 GiB
A100 = "Standard_NC24ads_A100_v4"
GIB = 1024**3


@pytest.mark.parametrize(
    ("model", "sku", "count", "fits", "nodes"),
    [
        pytest.param(
            "phi-3-mini-4k-instruct", "Standard_NC6s_v3", 1, True, 1, id="phi3-4k-on-v100"
        ),
        pytest.param(
            "phi-3-mini-128k-instruct", "Standard_NC6s_v3", 1, True, 1, id="phi3-128k-on-v100"
        ),
        pytest.param(
            "llama-3.3-70b-instruct", "Standard_NC6s_v3", 1, False, 0, id="llama70b-on-v100"
        ),
        pytest.param(
            "llama-3.3-70b-instruct",
            "Standard_NC48ads_A100_v4",
            None,
            True,
            2,
            id="llama70b-2xa100",
        ),
        pytest.param(
            "llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4", 2, True, 2, id="llama70b-count2"
        ),
        pytest.param(
            "llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4", 1, False, 2, id="llama70b-count1"
        ),
        pytest.param("smollm2-135m-instruct", "Standard_D4s_v3", None, True, 1, id="smollm-on-cpu"),
        pytest.param(
            "smollm2-360m-instruct", "Standard_NC6s_v3", None, True, 1, id="smollm-on-gpu"
        ),
        pytest.param("phi-4", "Standard_D4s_v3", None, False, 0, id="vllm-needs-gpus"),
        pytest.param(
            "falcon-7b-instruct", "Standard_NC6s_v3", None, False, 0, id="falcon-cannot-spread"
        ),
        # upstream Kaito's own examples, with their counts
        pytest.param("deepseek-r1-0528", H100X2, 6, True, 5, id="deepseek-r1-6xh100x2"),
        pytest.param("deepseek-v3-0324", H100X2, 6, True, 5, id="deepseek-v3-6xh100x2"),
        pytest.param(
            "mistral-large-3-675b-instruct", H100X2, 6, True, 5, id="mistral-large-3-6xh100x2"
        ),
        pytest.param("deepseek-r1-0528", H100X2, 4, False, 5, id="deepseek-r1-4-is-too-few"),
        pytest.param("deepseek-r1-0528", "Standard_ND96isr_H100_v5", None, True, 2, id="ds-8xh100"),
        pytest.param(
            "ministral-3-3b-instruct", "Standard_NV36ads_A10_v5", None, True, 1, id="ministral-3b"
        ),
        pytest.param("ministral-3-8b-instruct", A100, None, True, 1, id="ministral-8b"),
        pytest.param("ministral-3-14b-instruct", A100, None, True, 1, id="ministral-14b"),
        pytest.param("llama-2-7b", A100, None, True, 1, id="llama2-7b"),
        pytest.param("llama-2-13b-chat", A100, None, True, 1, id="llama2-13b-chat"),
        pytest.param("llama-2-70b", "Standard_NC96ads_A100_v4", 2, True, 1, id="llama2-70b-count2"),
    ],
)
def test_fit_verdicts(
    catalog: Catalog, model: str, sku: str, count: int | None, fits: bool, nodes: int
) -> None:
    report = fit_report(model, sku, catalog=catalog, count=count)
    assert (report.fits, report.nodes) == (fits, nodes), report.message


def test_the_memory_arithmetic_for_phi3_on_a_v100(catalog: Catalog) -> None:
    report = fit_report("phi-3-mini-4k-instruct", "Standard_NC6s_v3", catalog=catalog)
    weights = 7.12 * 1.02 * 1.05
    kv = 393216 * 4096 / 1024**3
    assert report.required_gpu_memory_gib == round(weights + kv + 1.5, 2)
    assert report.available_gpu_memory_gib == 14.4
    assert report.max_model_len == 4096
    assert report.tensor_parallel_size == 1


def test_llama70b_rejection_states_memory_and_cheapest_fits(catalog: Catalog) -> None:
    report = fit_report("llama-3.3-70b-instruct", "Standard_NC6s_v3", catalog=catalog, count=1)
    assert not report.fits
    assert report.required_gpu_memory_gib > 140
    assert report.available_gpu_memory_gib == 14.4
    assert len(report.suggestions) == 3
    costs = [catalog.instance_types[s].relative_cost for s in report.suggestions]
    assert costs == sorted(costs)
    assert {catalog.instance_types[s].cloud for s in report.suggestions} == {"azure"}
    cheaper_fits = [  # the asked SKU's cloud (azure) comes first
        t.name
        for t in catalog.instance_types.values()
        if t.cloud == "azure"
        and t.relative_cost < costs[-1]
        and t.name not in report.suggestions
        and fit_report("llama-3.3-70b-instruct", t, catalog=catalog, count=1).fits
    ]
    assert cheaper_fits == []
    for fragment in ("143.5 GiB", "14.4 GiB usable", report.suggestions[0]):
        assert fragment in report.message


def test_llama70b_on_two_a100_nodes_uses_tensor_and_pipeline_parallelism(catalog: Catalog) -> None:
    report = fit_report("llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4", catalog=catalog)
    assert (report.tensor_parallel_size, report.pipeline_parallel_size) == (2, 2)


def test_a_longer_context_needs_more_memory(catalog: Catalog) -> None:
    short = fit_report("phi-3-mini-128k-instruct", "Standard_NC6s_v3", catalog=catalog, count=1)
    long = fit_report(
        "phi-3-mini-128k-instruct",
        "Standard_NC6s_v3",
        catalog=catalog,
        max_model_len=131072,
        count=1,
    )
    assert short.fits
    assert not long.fits
    assert long.nodes == 5, "without a count it spreads over five V100 nodes"
    assert long.required_gpu_memory_gib - short.required_gpu_memory_gib == pytest.approx(
        46.5, abs=0.01
    )


def test_max_nodes_limits_spreading(catalog: Catalog) -> None:
    report = fit_report(
        "llama-3.3-70b-instruct", "Standard_NV36ads_A10_v5", catalog=catalog, max_nodes=4
    )
    assert not report.fits
    assert "no node count up to 4 fits" in report.message
    wider = fit_report(
        "llama-3.3-70b-instruct", "Standard_NV36ads_A10_v5", catalog=catalog, max_nodes=8
    )
    assert wider.fits
    assert wider.nodes == 8


@pytest.mark.parametrize(
    ("model", "gpus", "size"),
    [
        pytest.param("phi-3-medium-4k-instruct", 8, 2, id="kv-heads-10-on-8"),
        pytest.param("llama-3.3-70b-instruct", 8, 8, id="llama-on-8"),
        pytest.param("falcon-7b", 4, 1, id="71-heads"),
        pytest.param("phi-3-mini-4k-instruct", 1, 1, id="single-gpu"),
    ],
)
def test_tensor_parallel_size_follows_the_heads(
    catalog: Catalog, model: str, gpus: int, size: int
) -> None:
    spec = catalog.model(model)
    assert spec is not None
    assert tensor_parallel_size(spec, gpus) == size


def test_unknown_names_suggest_close_ones(catalog: Catalog) -> None:
    with pytest.raises(UnknownNameError, match="did you mean phi-3-mini-4k-instruct"):
        fit_report("phi-3-mini-4k-instruc", "Standard_NC6s_v3", catalog=catalog)
    with pytest.raises(UnknownNameError, match="did you mean Standard_NC6s_v3"):
        fit_report("phi-4", "Standard_NC6s_v9", catalog=catalog)


def test_the_memory_arithmetic_for_deepseek_on_six_h100_pairs(catalog: Catalog) -> None:
    report = fit_report("deepseek-r1-0528", H100X2, catalog=catalog, count=6)
    weights = 641.3 * 1.02 * 1.05
    kv = 61 * (512 + 64) * 2 * 4096 / GIB  # MLA: one latent + rotary key per layer
    assert report.required_gpu_memory_gib == round(weights + kv + 1.5 * 12, 2) == 705.1
    assert report.available_gpu_memory_gib == round(94 * 0.9 * 2 * 6, 2) == 1015.2
    assert report.tensor_parallel_size == 2
    assert report.pipeline_parallel_size == 5
    assert "fits Standard_NC80adis_H100_v5 on 6 nodes (5 needed)" in report.message
    # the sixth node lengthens the pipeline: the engine then holds the model's full context
    assert report.max_model_len == 163840
    assert "10.8 GiB KV cache for 163840 tokens" in report.message


def test_mla_keeps_the_full_context_of_deepseek_within_six_nodes(catalog: Catalog) -> None:
    full = fit_report("deepseek-v3-0324", H100X2, catalog=catalog, count=6, max_model_len=163840)
    mla_kv = 61 * (512 + 64) * 2 * 163840 / GIB
    assert round(mla_kv, 2) == 10.72
    assert full.fits, full.message
    assert full.required_gpu_memory_gib == round(641.3 * 1.02 * 1.05 + mla_kv + 18, 2)
    # Caching K and V for all 128 heads (2 x 61 x 128 x 192 x 2 bytes a token) would not fit.
    kv_of_all_heads = 2 * 61 * 128 * 192 * 2 * 163840 / GIB
    assert 641.3 * 1.02 * 1.05 + kv_of_all_heads + 18 > full.available_gpu_memory_gib


def test_refusals_suggest_the_asked_clouds_instance_types_first(catalog: Catalog) -> None:
    asked = (("g5.xlarge", "aws"), ("g2-standard-4", "gcp"), ("Standard_NC6s_v3", "azure"))
    for sku, cloud in asked:
        report = fit_report("llama-3.3-70b-instruct", sku, catalog=catalog, count=1)
        assert not report.fits
        clouds = [catalog.instance_types[s].cloud for s in report.suggestions]
        assert clouds == [cloud] * len(clouds), (sku, report.suggestions)
        assert f"{cloud} first, cheapest first" in report.message
