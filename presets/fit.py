"""GPU fit: does a preset fit an instance type, on how many nodes, and if not, what would.

The arithmetic (memory per engine, parallelism, served context) lives in
`presets.layout`; this module turns it into a verdict with its explanation. A fit names
the layout and why it was chosen (data, tensor or pipeline parallel) and the context the
model is served with; a refusal names the memory required, the memory available (per node
x count) and the three cheapest known SKUs that fit, those of the asked SKU's cloud first.
Pure: no I/O, no globals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from presets.catalog import Catalog, InstanceType, ModelSpec, did_you_mean
from presets.layout import (
    CPU_RUNTIME_GIB,
    CPU_WEIGHT_FACTOR,
    DEFAULT_MAX_MODEL_LEN,
    DEFAULT_MAX_NODES,
    GPU_MEMORY_UTILIZATION,
    RUNTIME_OVERHEAD_GIB,
    Layout,
    default_max_model_len,
    engine_need_gib,
    layout,
    nodes_needed,
    sizing_context,
    tensor_parallel_size,
    usable_gib,
    weights_gib,
)

SUGGESTIONS = 3

__all__ = [
    "DEFAULT_MAX_MODEL_LEN",
    "DEFAULT_MAX_NODES",
    "GPU_MEMORY_UTILIZATION",
    "FitReport",
    "UnknownNameError",
    "default_max_model_len",
    "fit_report",
    "nodes_needed",
    "suggestions",
    "tensor_parallel_size",
]


class UnknownNameError(ValueError):
    """A model or instance type name that the catalog does not know."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FitReport:
    """The verdict. Memory figures are at the sizing context (the explicit max-model-len,
    else min(context, 4096)) over tensor_parallel_size x nodes GPUs; `max_model_len` is
    the context served (`context_fitted`: computed from the memory left, not set)."""

    model: str
    instance_type: str
    fits: bool
    runs_on_cpu: bool
    required_gpu_memory_gib: float
    available_gpu_memory_gib: float
    per_gpu_required_gib: float
    usable_per_gpu_gib: float
    nodes: int
    count: int | None
    gpus_per_node: int
    max_model_len: int
    context_fitted: bool
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    replicas: int
    layout: str
    layout_reason: str
    suggestions: tuple[str, ...]
    message: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["suggestions"] = list(self.suggestions)
        return out


def suggestions(
    model: ModelSpec,
    catalog: Catalog,
    *,
    max_model_len: int | None,
    count: int | None,
    max_nodes: int,
    cloud: str | None = None,
) -> tuple[str, ...]:
    """The cheapest known SKUs that fit at `count` nodes (1 when absent): those of `cloud`
    first, each group cheapest first."""
    nodes = count or 1
    ranked: list[tuple[bool, float, str]] = []
    for sku in catalog.instance_types.values():
        needed = nodes_needed(model, sku, max_model_len, max_nodes)
        if needed and needed <= nodes:
            ranked.append((sku.cloud != cloud, sku.relative_cost * nodes, sku.name))
    return tuple(name for _, _, name in sorted(ranked)[:SUGGESTIONS])


def lookup(
    catalog: Catalog, model: ModelSpec | str, sku: InstanceType | str
) -> tuple[ModelSpec, InstanceType]:
    """Resolve names to catalog entries; UnknownNameError with close matches otherwise."""
    spec = model if isinstance(model, ModelSpec) else catalog.model(model)
    if spec is None:
        raise UnknownNameError(_unknown("model", str(model), list(catalog.models)))
    found = sku if isinstance(sku, InstanceType) else catalog.instance_type(sku)
    if found is None:
        raise UnknownNameError(_unknown("instance type", str(sku), list(catalog.instance_types)))
    return spec, found


def _unknown(what: str, name: str, known: list[str]) -> str:
    return f"unknown {what} {name!r}{did_you_mean(name, known)}"


def fit_report(
    model: ModelSpec | str,
    instance_type: InstanceType | str,
    *,
    catalog: Catalog,
    max_model_len: int | None = None,
    count: int | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
    with_suggestions: bool = True,
) -> FitReport:
    """Whether `model` fits `instance_type` (at `count` nodes when given), and why.

    The suggestions scan every known instance type; `with_suggestions=False` skips that
    scan for callers that only need the verdict (the reconciler checks every Workspace
    on every pass)."""
    spec, sku = lookup(catalog, model, instance_type)
    lay = layout(spec, sku, max_model_len=max_model_len, count=count, max_nodes=max_nodes)
    needed = lay.nodes
    considered = count or needed or 1
    fits = needed > 0 and (count is None or count >= needed)
    tp = max(lay.tensor_parallel, 1)
    sizing = sizing_context(spec, max_model_len)
    gpus = tp * considered if sku.gpu_count else 0
    required = engine_need_gib(spec, sizing, gpus) if gpus else 0.0
    report = FitReport(
        model=spec.name,
        instance_type=sku.name,
        fits=fits,
        runs_on_cpu=sku.gpu_count == 0,
        required_gpu_memory_gib=round(required, 2),
        available_gpu_memory_gib=round(usable_gib(sku) * sku.gpu_count * considered, 2),
        per_gpu_required_gib=round(required / gpus, 2) if gpus else 0.0,
        usable_per_gpu_gib=round(usable_gib(sku), 2),
        nodes=needed,
        count=count,
        gpus_per_node=sku.gpu_count,
        max_model_len=lay.max_model_len,
        context_fitted=lay.context_fitted,
        tensor_parallel_size=tp,
        pipeline_parallel_size=max(needed, 1),
        data_parallel_size=lay.data_parallel,
        replicas=lay.replicas,
        layout=lay.summary(),
        layout_reason=lay.why,
        suggestions=(
            suggestions(
                spec, catalog, max_model_len=max_model_len, count=count,
                max_nodes=max_nodes, cloud=sku.cloud,
            )
            if with_suggestions
            else ()
        ),
        message="",
    )
    text = explain(report, spec, sku, lay, sizing=sizing, max_nodes=max_nodes)
    return replace(report, message=text)


# The words of a verdict: formatting only, never deciding whether something fits.


def gib(value: float) -> str:
    """A GiB amount for messages: one decimal, rounded up so 'needs' never understates."""
    return f"{math.ceil(round(value, 6) * 10) / 10:.1f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _cpu(report: FitReport, model: ModelSpec, sku: InstanceType, cloud: str) -> str:
    ram = gib(model.weights_gib * CPU_WEIGHT_FACTOR + CPU_RUNTIME_GIB)
    has = gib(sku.memory_gib)
    if model.runtime != "transformers":
        head = f"{model.name} needs GPUs (runtime {model.runtime}) but {sku.name} has none"
    elif report.fits:
        return f"{model.name} runs on CPU on {sku.name}: needs about {ram} GiB RAM of {has} GiB"
    else:
        head = f"{model.name} needs about {ram} GiB RAM but {sku.name} has {has} GiB"
    return head + _suggest(report, cloud)


def _suggest(report: FitReport, cloud: str) -> str:
    if not report.suggestions:
        return "; no known instance type fits"
    at = _plural(report.count or 1, "node")
    return (
        f"; instance types that fit at {at}, {cloud} first, cheapest first: "
        f"{', '.join(report.suggestions)}"
    )


def _breakdown(model: ModelSpec, tokens: int, gpus: int) -> str:
    need = round(engine_need_gib(model, tokens, gpus), 2)  # as FitReport rounds it
    return (
        f"{gib(need)} GiB of GPU memory ({gib(weights_gib(model))} GiB weights, "
        f"{gib(model.kv_cache_gib(tokens))} GiB KV cache for {tokens} tokens, "
        f"{RUNTIME_OVERHEAD_GIB:g} GiB runtime per GPU; {gib(round(need / gpus, 2))} GiB per GPU)"
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


def _context(lay: Layout, model: ModelSpec) -> str:
    if not lay.context_fitted:
        return f"serves {lay.max_model_len} tokens of context (as set)"
    if lay.max_model_len >= model.context_length:
        return f"serves {lay.max_model_len} tokens of context (the model's full context)"
    return (
        f"serves {lay.max_model_len} tokens of context (the most that fits; the model "
        f"supports {model.context_length})"
    )


def explain(
    report: FitReport,
    model: ModelSpec,
    sku: InstanceType,
    lay: Layout,
    *,
    sizing: int,
    max_nodes: int,
) -> str:
    """One sentence for humans (CLI output, admission denials, status messages)."""
    if sku.gpu_count == 0:
        return _cpu(report, model, sku, sku.cloud)
    if report.fits:
        engine = lay.engine_gpus
        return (
            f"{model.name} fits {sku.name} on {_plural(lay.node_count, 'node')}"
            f"{'' if lay.node_count == report.nodes else f' ({report.nodes} needed)'}, "
            f"{lay.summary()}: {lay.why}; each engine needs "
            f"{_breakdown(model, lay.max_model_len, engine)} of "
            f"{gib(usable_gib(sku) * engine)} GiB usable; {_context(lay, model)}"
        )
    gpus = report.tensor_parallel_size * (report.count or max(report.nodes, 1))
    return (
        f"{model.name} does not fit: needs {_breakdown(model, sizing, gpus)} but "
        f"{_offer(report, sku)}{_why_not(report, model, max_nodes)}"
        f"{_suggest(report, sku.cloud)}"
    )
