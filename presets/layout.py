"""How a model is laid over GPUs, and the context it is served with.

Why: GPU fit (`presets.fit`), expansion (`presets.expand`) and the vLLM command line
(`presets.commands`) must agree on one layout, so it is decided here, once. Pure
arithmetic over catalog entries; it must not do I/O or word refusals (`presets.fit` does).

The memory model (every constant is named below):

* usable memory per GPU = gpu_memory_gib x 0.9, the share vLLM may use
  (`--gpu-memory-utilization 0.9`);
* an engine (one vLLM engine over t GPUs of a node, tensor parallel, times p nodes,
  pipeline parallel) needs weights_gib x 1.02 (buffers loaded with the weights) x 1.05
  (activation workspace) + the KV cache of one sequence of max-model-len tokens
  (2 x layers x KV heads x head dim x 2 bytes per token) + 1.5 GiB per GPU (CUDA context,
  NCCL buffers, CUDA graphs), and has usable x t x p;
* t is a size vLLM accepts: it divides the node's GPU count and the attention heads, and
  the KV heads divide it or it divides them.

The layout, first match wins:

1. data parallel: the smallest t whose GPUs hold the engine at the sizing context with
   the weights taking at most half of their usable memory (the other half is KV cache, so
   the engine can batch); the node's G GPUs run G / t engines side by side behind one
   endpoint (vLLM's `--data-parallel-size`). A model that fits one GPU that way is never
   split over several;
2. tensor parallel: otherwise, when the model fits one node, one engine spans the largest
   valid t;
3. pipeline parallel: otherwise, presets marked `distributed` span the smallest node count
   k (at most `max_nodes`) that fits, with t GPUs per node and one stage per node.

The sizing context is the explicit max-model-len when there is one, else min(the model's
context, 4096). The served context, when not explicit, is the largest one the engine's
memory holds after weights and overhead, capped at the model's own context (rounded down
to a multiple of 1024 below that cap). More nodes than needed (`resource.count`) repeat a
one-node layout on every node (replicas behind one Service) or lengthen a multi-node
pipeline. A CPU-only node (gpu_count 0) runs transformers-runtime presets when its RAM
holds weights x 2 (a float32 copy) + 2 GiB, at the sizing context; for a preset that vLLM's
CPU image may serve instead (catalog `vllmOnCpu`), plus vLLM's KV cache space on CPU
(`cpu_kv_cache_gib`: 4 sequences of the served context in float32, at least 1 GiB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from presets.catalog import GIB, KV_CACHE_DTYPE_BYTES, InstanceType, ModelSpec

GPU_MEMORY_UTILIZATION = 0.9
WEIGHT_LOAD_FACTOR = 1.02
ACTIVATION_FACTOR = 1.05
RUNTIME_OVERHEAD_GIB = 1.5
WEIGHT_SHARE = 0.5
DEFAULT_MAX_MODEL_LEN = 4096
CONTEXT_STEP = 1024
DEFAULT_MAX_NODES = 8
CPU_WEIGHT_FACTOR = 2.0
CPU_RUNTIME_GIB = 2.0
CPU_KV_SEQUENCES = 4  # vLLM on CPU: KV cache room for this many full-context sequences
CPU_KV_DTYPE_BYTES = 4  # vLLM on CPU runs in float32 (presets.commands), its KV cache too


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Where one model runs on one instance type.

    `nodes` is the smallest node count that fits (0: none does); `node_count` the nodes
    used (`resource.count` when given, else `nodes`). Each engine spans
    `tensor_parallel` GPUs on each of `pipeline_parallel` nodes; a node runs
    `data_parallel` engines; `replicas` copies of the whole layout serve behind one
    Service. `tensor_parallel` is 0 on a CPU-only node. `why` says why, in one clause.
    """

    nodes: int
    node_count: int
    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int
    replicas: int
    max_model_len: int
    context_fitted: bool
    why: str

    @property
    def engine_gpus(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def kind(self) -> str:
        """cpu, single-gpu, data-parallel, tensor-parallel or pipeline-parallel."""
        if self.tensor_parallel == 0:
            return "cpu"
        if self.pipeline_parallel > 1:
            return "pipeline-parallel"
        if self.data_parallel > 1:
            return "data-parallel"
        return "tensor-parallel" if self.tensor_parallel > 1 else "single-gpu"

    def summary(self) -> str:
        """`kubectl get -o wide` words: e.g. `data-parallel 4 x 1 GPU`."""
        if self.tensor_parallel == 0:
            return "cpu"
        gpus = "1 GPU" if self.tensor_parallel == 1 else f"{self.tensor_parallel} GPUs"
        if self.pipeline_parallel > 1:
            return f"pipeline-parallel {self.pipeline_parallel} nodes x {gpus}"
        engines = "" if self.data_parallel == 1 else f"data-parallel {self.data_parallel} x "
        head = "tensor-parallel " if self.tensor_parallel > 1 else ""
        text = f"{engines}{head}{gpus}"
        return text if self.replicas == 1 else f"{text}, {self.replicas} replicas"


def weights_gib(model: ModelSpec) -> float:
    """The weights as they sit in GPU memory, with load buffers and activations."""
    return model.weights_gib * WEIGHT_LOAD_FACTOR * ACTIVATION_FACTOR


def engine_need_gib(model: ModelSpec, max_model_len: int, gpus: int) -> float:
    """GPU memory one engine over `gpus` GPUs needs at `max_model_len` tokens."""
    return weights_gib(model) + model.kv_cache_gib(max_model_len) + RUNTIME_OVERHEAD_GIB * gpus


def usable_gib(sku: InstanceType) -> float:
    """The memory of one GPU of `sku` that vLLM may use."""
    return sku.gpu_memory_gib * GPU_MEMORY_UTILIZATION


def tp_sizes(model: ModelSpec, gpus: int) -> list[int]:
    """Tensor-parallel sizes vLLM accepts for `model` on a node of `gpus` GPUs, ascending."""
    kv = model.num_kv_heads
    sizes = [
        size
        for size in range(1, max(gpus, 1) + 1)
        if gpus % size == 0
        and model.num_attention_heads % size == 0
        and (kv % size == 0 or size % kv == 0)
    ]
    return sizes or [1]


def tensor_parallel_size(model: ModelSpec, gpus: int) -> int:
    """The largest tensor-parallel size vLLM accepts on a node of `gpus` GPUs."""
    return tp_sizes(model, gpus)[-1]


def sizing_context(model: ModelSpec, explicit: int | None) -> int:
    """The context the node count is sized for."""
    return explicit or min(model.context_length, DEFAULT_MAX_MODEL_LEN)


def default_max_model_len(model: ModelSpec) -> int:
    """The context a preset gets when nothing is known about its GPUs (no instance type)."""
    return sizing_context(model, None)


def fitted_context(model: ModelSpec, sku: InstanceType, gpus: int, floor: int) -> int:
    """The largest context an engine of `gpus` GPUs holds, capped at the model's own."""
    room = (usable_gib(sku) - RUNTIME_OVERHEAD_GIB) * gpus - weights_gib(model)
    per_token = model.kv_cache_gib(1)
    tokens = math.floor(room / per_token) if per_token > 0 else model.context_length
    if tokens >= model.context_length:
        return model.context_length
    return max(tokens // CONTEXT_STEP * CONTEXT_STEP, floor)


def _fits(model: ModelSpec, sku: InstanceType, context: int, gpus: int) -> bool:
    return engine_need_gib(model, context, gpus) <= usable_gib(sku) * gpus


def _gib(value: float) -> str:
    """Rounded up, as every GiB figure in a fit explanation (`presets.fit.gib`)."""
    return f"{math.ceil(round(value, 6) * 10) / 10:.1f} GiB"


def _one_node(model: ModelSpec, sku: InstanceType, context: int) -> tuple[int, str] | None:
    """(t, why) of the engine on one node, or None when the model does not fit one node."""
    sizes = tp_sizes(model, sku.gpu_count)
    weights = weights_gib(model)
    for t in sizes:
        half = WEIGHT_SHARE * usable_gib(sku) * t
        if weights <= half and _fits(model, sku, context, t):
            where = "one GPU" if t == 1 else f"{t} GPUs"
            why = f"the weights ({_gib(weights)}) take at most half of {where} ({_gib(half)})"
            engines = sku.gpu_count // t
            if engines > 1:
                return t, f"{why}, so each of the node's {engines} engines runs on {where}"
            return t, f"{why}, so one engine runs on {where}"
    largest = sizes[-1]
    if _fits(model, sku, context, largest):
        return largest, (
            f"the weights ({_gib(weights)}) need more than half of any smaller engine, "
            f"so one engine spans the node's {largest} GPUs"
        )
    return None


def _pipeline_why(model: ModelSpec, sku: InstanceType, t: int, nodes: int, limit: int) -> str:
    node = f"one node ({t} x {_gib(usable_gib(sku))} usable)"
    if nodes:
        return (
            f"the model does not fit {node}, so each of {nodes} nodes holds one pipeline "
            f"stage on {t} GPUs"
        )
    if not model.distributed:
        return f"the model does not fit {node} and cannot span several nodes"
    return f"the model does not fit {node} nor {limit} of them"


def cpu_kv_cache_gib(model: ModelSpec, max_model_len: int) -> int:
    """vLLM's KV cache space on a CPU-only node (VLLM_CPU_KVCACHE_SPACE, whole GiB)."""
    per_token = model.kv_bytes_per_token * CPU_KV_DTYPE_BYTES / KV_CACHE_DTYPE_BYTES
    return max(1, math.ceil(per_token * max_model_len * CPU_KV_SEQUENCES / GIB))


def _cpu(model: ModelSpec, sku: InstanceType, explicit: int | None, count: int | None) -> Layout:
    context = sizing_context(model, explicit)
    ram = model.weights_gib * CPU_WEIGHT_FACTOR + CPU_RUNTIME_GIB
    if model.vllm_on_cpu:
        ram += cpu_kv_cache_gib(model, context)
    ok = model.runtime == "transformers" and ram <= sku.memory_gib
    return Layout(
        nodes=1 if ok else 0,
        node_count=count or 1,
        tensor_parallel=0,
        pipeline_parallel=1,
        data_parallel=1,
        replicas=count or 1,
        max_model_len=context,
        context_fitted=False,
        why="a CPU-only node runs the transformers runtime in RAM",
    )


def layout(
    model: ModelSpec,
    sku: InstanceType,
    *,
    max_model_len: int | None = None,
    count: int | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> Layout:
    """How `model` runs on `sku` (see the module docstring); `nodes == 0` when it cannot."""
    if sku.gpu_count == 0:
        return _cpu(model, sku, max_model_len, count)
    floor = sizing_context(model, max_model_len)
    engine = _one_node(model, sku, floor)
    if engine is not None:
        t, why = engine
        nodes, dp = 1, sku.gpu_count // t
    else:
        t, dp = tensor_parallel_size(model, sku.gpu_count), 1
        limit = max_nodes if model.distributed else 1
        nodes = next((k for k in range(2, limit + 1) if _fits(model, sku, floor, t * k)), 0)
        why = _pipeline_why(model, sku, t, nodes, max_nodes)
    node_count = count or nodes or 1
    pp = max(nodes, 1)
    if nodes > 1 and node_count > nodes:
        pp = node_count  # a longer pipeline leaves no node idle and holds a longer context
    short = nodes == 0 or node_count < nodes  # refused: serve (and explain) the sizing context
    context = max_model_len or (floor if short else fitted_context(model, sku, t * pp, floor))
    return Layout(
        nodes=nodes,
        node_count=node_count,
        tensor_parallel=t,
        pipeline_parallel=pp,
        data_parallel=dp,
        replicas=node_count if nodes == 1 else 1,
        max_model_len=context,
        context_fitted=max_model_len is None,
        why=why,
    )


def nodes_needed(model: ModelSpec, sku: InstanceType, mml: int | None, max_nodes: int) -> int:
    """The smallest node count that fits, or 0 when none up to the limit does."""
    return layout(model, sku, max_model_len=mml, max_nodes=max_nodes).nodes
