"""GPU fit: does a preset fit an instance type, on how many nodes, and if not, what would.

The formula (ours; every constant is named below):

* usable memory per GPU = gpu_memory_gib x 0.9, the share vLLM may use
  (`--gpu-memory-utilization 0.9`);
* the model's memory = weights_gib x 1.02 (buffers loaded with the weights) x 1.05
  (activation workspace of the forward pass, which grows with the model) plus the KV cache
  for one sequence of `max_model_len` tokens; KV bytes per token =
  2 (K and V) x layers x KV heads x head dim x 2 bytes (16-bit cache);
* spread over n GPUs, each GPU needs model memory / n + 1.5 GiB (CUDA context, NCCL
  buffers, CUDA graphs);
* a node uses t GPUs, the largest divisor of its GPU count that also divides the model's
  attention heads and is compatible with its KV heads (vLLM's tensor-parallel rule); the
  smallest node count k with need(k x t) <= usable fits; several nodes (pipeline
  parallel) only for presets marked `distributed`, at most 8 unless told otherwise;
* a CPU-only node (gpu_count 0) runs presets of the transformers runtime when its RAM
  holds weights x 2 (a float32 copy) + 2 GiB; vLLM presets need GPUs.

A rejection names the memory required, the memory available (per node x count) and the
three cheapest known SKUs that fit (relative cost x nodes). Pure: no I/O, no globals.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, replace
from typing import Any

from presets.catalog import Catalog, InstanceType, ModelSpec
from presets.fit_params import (
    ACTIVATION_FACTOR,
    CPU_RUNTIME_GIB,
    CPU_WEIGHT_FACTOR,
    DEFAULT_MAX_MODEL_LEN,
    DEFAULT_MAX_NODES,
    GPU_MEMORY_UTILIZATION,
    RUNTIME_OVERHEAD_GIB,
    SUGGESTIONS,
    WEIGHT_LOAD_FACTOR,
)
from presets.fit_text import explain

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
    tensor_parallel_size: int
    pipeline_parallel_size: int
    suggestions: tuple[str, ...]
    message: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["suggestions"] = list(self.suggestions)
        return out


def default_max_model_len(model: ModelSpec) -> int:
    """The context a preset is served with unless the Workspace says otherwise."""
    return min(model.context_length, DEFAULT_MAX_MODEL_LEN)


def tensor_parallel_size(model: ModelSpec, gpus: int) -> int:
    """GPUs per node the model is split over: the largest size vLLM accepts."""
    for size in range(max(gpus, 1), 0, -1):
        kv = model.num_kv_heads
        if gpus % size or model.num_attention_heads % size:
            continue
        if kv % size == 0 or size % kv == 0:
            return size
    return 1


def _model_gib(model: ModelSpec, max_model_len: int) -> tuple[float, float]:
    weights = model.weights_gib * WEIGHT_LOAD_FACTOR * ACTIVATION_FACTOR
    return weights, model.kv_cache_gib(max_model_len)


def _need(model_gib: float, gpus: int) -> float:
    return model_gib + RUNTIME_OVERHEAD_GIB * gpus


def nodes_needed(model: ModelSpec, sku: InstanceType, mml: int, max_nodes: int) -> int:
    """The smallest node count that fits, or 0 when none up to the limit does."""
    if sku.gpu_count == 0:
        ram = model.weights_gib * CPU_WEIGHT_FACTOR + CPU_RUNTIME_GIB
        return 1 if model.runtime == "transformers" and ram <= sku.memory_gib else 0
    usable = sku.gpu_memory_gib * GPU_MEMORY_UTILIZATION
    tp = tensor_parallel_size(model, sku.gpu_count)
    weights, kv = _model_gib(model, mml)
    limit = max_nodes if model.distributed else 1
    for nodes in range(1, max(limit, 1) + 1):
        gpus = nodes * tp
        if _need(weights + kv, gpus) <= usable * gpus:
            return nodes
    return 0


def suggestions(
    model: ModelSpec, catalog: Catalog, *, max_model_len: int, count: int | None, max_nodes: int
) -> tuple[str, ...]:
    """The cheapest known SKUs that fit at `count` nodes (1 when absent), cheapest first."""
    nodes = count or 1
    ranked: list[tuple[float, str]] = []
    for sku in catalog.instance_types.values():
        needed = nodes_needed(model, sku, max_model_len, max_nodes)
        if needed and needed <= nodes:
            ranked.append((sku.relative_cost * nodes, sku.name))
    return tuple(name for _, name in sorted(ranked)[:SUGGESTIONS])


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
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown {what} {name!r}{hint}"


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
    mml = max_model_len or default_max_model_len(spec)
    needed = nodes_needed(spec, sku, mml, max_nodes)
    considered = count or needed or 1
    fits = needed > 0 and (count is None or count >= needed)
    tp = tensor_parallel_size(spec, sku.gpu_count) if sku.gpu_count else 1
    usable = sku.gpu_memory_gib * GPU_MEMORY_UTILIZATION
    weights, kv = _model_gib(spec, mml)
    gpus = tp * considered if sku.gpu_count else 0
    required = _need(weights + kv, gpus) if gpus else 0.0
    report = FitReport(
        model=spec.name,
        instance_type=sku.name,
        fits=fits,
        runs_on_cpu=sku.gpu_count == 0,
        required_gpu_memory_gib=round(required, 2),
        available_gpu_memory_gib=round(usable * sku.gpu_count * considered, 2),
        per_gpu_required_gib=round(required / gpus, 2) if gpus else 0.0,
        usable_per_gpu_gib=round(usable, 2),
        nodes=needed,
        count=count,
        gpus_per_node=sku.gpu_count,
        max_model_len=mml,
        tensor_parallel_size=tp,
        pipeline_parallel_size=max(needed, 1),
        suggestions=(
            suggestions(spec, catalog, max_model_len=mml, count=count, max_nodes=max_nodes)
            if with_suggestions
            else ()
        ),
        message="",
    )
    text = explain(report, spec, sku, weights=weights, kv=kv, max_nodes=max_nodes)
    return replace(report, message=text)
