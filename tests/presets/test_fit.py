"""GPU fit: the numbers behind accept / reject and the node count."""

from __future__ import annotations

import pytest

from presets.catalog import Catalog
from presets.fit import UnknownNameError, fit_report, tensor_parallel_size


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
    cheaper_fits = [
        t.name
        for t in catalog.instance_types.values()
        if t.relative_cost < costs[-1]
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
