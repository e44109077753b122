"""The words of a GPU-fit verdict: what is needed, what the nodes offer, what would fit.

Kept apart from the arithmetic in `presets.fit` so that the numbers stay easy to read and
test. It formats only; it must not decide whether something fits.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from presets.catalog import InstanceType, ModelSpec
from presets.fit_params import (
    CPU_RUNTIME_GIB,
    CPU_WEIGHT_FACTOR,
    GPU_MEMORY_UTILIZATION,
    RUNTIME_OVERHEAD_GIB,
)

if TYPE_CHECKING:
    from presets.fit import FitReport


def gib(value: float) -> str:
    """A GiB amount for messages: one decimal, rounded up so 'needs' never understates."""
    return f"{math.ceil(round(value, 6) * 10) / 10:.1f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _cpu(report: FitReport, model: ModelSpec, sku: InstanceType) -> str:
    ram = gib(model.weights_gib * CPU_WEIGHT_FACTOR + CPU_RUNTIME_GIB)
    has = gib(sku.memory_gib)
    if model.runtime != "transformers":
        head = f"{model.name} needs GPUs (runtime {model.runtime}) but {sku.name} has none"
    elif report.fits:
        return f"{model.name} runs on CPU on {sku.name}: needs about {ram} GiB RAM of {has} GiB"
    else:
        head = f"{model.name} needs about {ram} GiB RAM but {sku.name} has {has} GiB"
    return head + _suggest(report)


def _suggest(report: FitReport) -> str:
    if not report.suggestions:
        return "; no known instance type fits"
    at = _plural(report.count or 1, "node")
    return f"; instance types that fit at {at}, cheapest first: {', '.join(report.suggestions)}"


def _breakdown(report: FitReport, weights: float, kv: float) -> str:
    return (
        f"{gib(report.required_gpu_memory_gib)} GiB of GPU memory ({gib(weights)} GiB weights, "
        f"{gib(kv)} GiB KV cache for {report.max_model_len} tokens, "
        f"{RUNTIME_OVERHEAD_GIB:g} GiB runtime per GPU; "
        f"{gib(report.per_gpu_required_gib)} GiB per GPU)"
    )


def _offer(report: FitReport, sku: InstanceType) -> str:
    nodes = report.count or max(report.nodes, 1)
    return (
        f"{_plural(nodes, 'node')} of {sku.name} {'offers' if nodes == 1 else 'offer'} "
        f"{gib(report.available_gpu_memory_gib)} GiB usable ({_plural(sku.gpu_count, 'GPU')} x "
        f"{sku.gpu_memory_gib:g} GiB x {GPU_MEMORY_UTILIZATION:g} per node)"
    )


def _why_not(report: FitReport, model: ModelSpec, max_nodes: int) -> str:
    if report.nodes and report.count is not None:
        return f"; it needs {_plural(report.nodes, 'node')}, resource.count is {report.count}"
    if not model.distributed:
        return "; the preset cannot span several nodes"
    return f"; no node count up to {max_nodes} fits"


def explain(
    report: FitReport,
    model: ModelSpec,
    sku: InstanceType,
    *,
    weights: float,
    kv: float,
    max_nodes: int,
) -> str:
    """One sentence for humans (CLI output, admission denials, status messages)."""
    if sku.gpu_count == 0:
        return _cpu(report, model, sku)
    if report.fits:
        return (
            f"{model.name} fits {sku.name} on {_plural(report.nodes, 'node')}: needs "
            f"{_breakdown(report, weights, kv)}; {_offer(report, sku)}"
        )
    return (
        f"{model.name} does not fit: needs {_breakdown(report, weights, kv)} but "
        f"{_offer(report, sku)}{_why_not(report, model, max_nodes)}{_suggest(report)}"
    )
