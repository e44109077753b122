"""Pure builders of the model-server container command for an inference Workspace.

Why: the reconciler puts this command into the pod it creates; the webhook and the
offline `render` may show it. Two shapes: our transformers server
(`python -m runtime.serving.server ...`) and, for GPU presets (and `kaito.sh/runtime: vllm`
on a CPU-only node: vLLM's CPU image, float32), vLLM's OpenAI server behind
our thin front (`python -m runtime.serving.vllm_front ... -- <vLLM arguments>`). Both take
`--api-key-file PATH` (the model API then needs that key as a bearer token) when the pod
mounts the Workspace's API key Secret there.
What it must not do: import torch or the `runtime` package (the reconciler
imports this module), read the clock, files or environment. Same inputs, same list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from crds.workspace import (
    ANNOTATION_MODEL_ARTIFACT,
    ANNOTATION_PERFORMANCE_MODE,
    PERFORMANCE_MODES,
    Workspace,
)
from presets.expand import Resolved, runs_on_cpu
from presets.fit import GPU_MEMORY_UTILIZATION

SERVER_PORT = 5000
VLLM_PORT = 5001
DEFAULT_MAX_LORA_RANK = 64
PYTHON = "python"
# Keys the front owns: a user's inference config cannot move vLLM off the port we proxy to.
RESERVED_VLLM_KEYS = frozenset({"port", "host", "model", "served-model-name"})
VLLM_DTYPES = frozenset({"auto", "half", "float16", "bfloat16", "float", "float32"})
# A private preset's image (the user's) holds the weights where Kaito's images keep them.
PRIVATE_WEIGHTS_DIR = "/workspace/tfs/weights"


class CommandError(ValueError):
    """The Workspace cannot be turned into a server command (no preset, bad strength)."""


def adapters_of(ws: Workspace) -> list[tuple[str, float]]:
    """(name, strength) of each inference adapter, in the Workspace's order."""
    out: list[tuple[str, float]] = []
    adapters = ws.inference.adapters if ws.inference is not None else None
    for i, adapter in enumerate(adapters or ()):
        name = adapter.source.name if adapter.source is not None else None
        if not name:
            raise CommandError(f"inference.adapters[{i}].source.name is required")
        try:
            strength = float(adapter.strength) if adapter.strength is not None else 1.0
        except ValueError:
            raise CommandError(
                f"inference.adapters[{i}].strength {adapter.strength!r} is not a number"
            ) from None
        out.append((name, strength))
    return out


def _strength_text(value: float) -> str:
    return repr(value) if value != int(value) else f"{int(value)}.0"


def weights_source(annotations: Mapping[str, str], resolved: Resolved) -> tuple[str, str | None]:
    """(model, revision): where the runtime gets the weights (runtime.weights reads it).

    The Workspace's model artifact (`oci://REF`, annotation kaito.sh/model-artifact), else
    the user's image for a private preset, else the weights the runtime image bakes, else
    the Hugging Face repository at the catalog's pinned revision."""
    artifact = annotations.get(ANNOTATION_MODEL_ARTIFACT, "").strip()
    model = resolved.model
    if artifact:
        return f"oci://{artifact.removeprefix('oci://')}", None
    if model is None:
        return str(resolved.preset), None
    if model.access == "private":
        return PRIVATE_WEIGHTS_DIR, None
    if model.weights_in_image and resolved.runtime == "transformers":
        return str(resolved.preset), None
    return model.hf_id, model.revision


def weights_args(annotations: Mapping[str, str], resolved: Resolved) -> list[str]:
    """`--model M [--revision R]` for our server and the tuning job (see weights_source)."""
    model, revision = weights_source(annotations, resolved)
    return ["--model", model] + (["--revision", revision] if revision else [])


# The `transformers:` keys of the inference ConfigMap our server takes (its flags), each
# with the type it parses; the keys the pod owns (model, port, adapters) are not among them.
TRANSFORMERS_KEYS: Mapping[str, type] = {
    "max-model-len": int,
    "dtype": str,
    "threads": int,
    "http-threads": int,
    "default-max-tokens": int,
    "max-queue": int,
    "max-body-bytes": int,
    "max-prompt-chars": int,
    "max-tokens-limit": int,
    "stuck-after": float,
}


def _transformers_options(config: Mapping[str, Any]) -> dict[str, str]:
    """The `transformers:` section as server flags; CommandError names a key it lacks."""
    out: dict[str, str] = {}
    for key, value in config.items():
        flag = str(key).strip().lstrip("-").replace("_", "-")
        kind = TRANSFORMERS_KEYS.get(flag)
        if kind is None:
            known = ", ".join(sorted(TRANSFORMERS_KEYS))
            raise CommandError(
                f"inference config: the transformers server has no setting {key!r}; "
                f"it takes {known}"
            )
        good = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            good = True
        if not good:
            raise CommandError(
                f"inference config: transformers.{key} must be a {kind.__name__}, "
                f"got {value!r}"
            )
        out[flag] = str(value)
    return out


def transformers_command(
    ws: Workspace,
    resolved: Resolved,
    *,
    adapters_dir: str = "/mnt/adapters",
    config: Mapping[str, Any] | None = None,
    api_key_file: str | None = None,
) -> list[str]:
    """Our server's command; `config` (the `transformers:` section of the inference
    ConfigMap) sets its flags, the context included; `api_key_file` turns the API key on."""
    if not resolved.preset:
        raise CommandError("inference.preset.name is required for a preset command")
    cmd = [
        PYTHON,
        "-m",
        "runtime.serving.server",
        *weights_args(ws.annotations, resolved),
        "--served-model-name",
        resolved.preset,
        "--port",
        str(SERVER_PORT),
    ]
    options = _transformers_options(config or {})
    if resolved.max_model_len:
        options.setdefault("max-model-len", str(resolved.max_model_len))
    for flag, value in options.items():
        cmd += [f"--{flag}", value]
    for name, strength in adapters_of(ws):
        cmd += ["--adapter", f"{name}={adapters_dir}/{name}:{_strength_text(strength)}"]
    if api_key_file:
        cmd += ["--api-key-file", api_key_file]
    return cmd


def vllm_arguments(
    ws: Workspace,
    resolved: Resolved,
    *,
    adapters_dir: str = "/mnt/adapters",
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """vLLM OpenAI-server arguments; `config` (the `vllm:` section of the inference config
    ConfigMap) wins key by key: a value replaces ours, `false`/`null` removes a flag."""
    if not resolved.preset:
        raise CommandError("inference.preset.name is required for a preset command")
    model = resolved.model
    weights, revision = weights_source(ws.annotations, resolved)
    options: dict[str, Any] = {
        "model": weights,
        "revision": revision,  # None renders nothing; the front fetches it into the node cache
        "served-model-name": resolved.preset,
        "tensor-parallel-size": resolved.tensor_parallel_size,
        "pipeline-parallel-size": resolved.pipeline_parallel_size,
    }
    if resolved.data_parallel_size > 1:  # one engine per GPU group, behind one endpoint
        options["data-parallel-size"] = resolved.data_parallel_size
    if resolved.pipeline_parallel_size > 1:
        options["distributed-executor-backend"] = "ray"
    if resolved.max_model_len:
        options["max-model-len"] = resolved.max_model_len
    # on a CPU-only node the KV cache is sized by VLLM_CPU_KVCACHE_SPACE (reconciler.podparts)
    options["gpu-memory-utilization"] = (
        None if runs_on_cpu(resolved.instance_type) else GPU_MEMORY_UTILIZATION)
    options["dtype"] = _dtype(resolved)
    mode = ws.annotations.get(ANNOTATION_PERFORMANCE_MODE)
    if mode in PERFORMANCE_MODES and mode != "balanced":  # balanced is vLLM's default
        options["performance-mode"] = mode
    if model is not None:
        options.update(model.vllm_args)  # flags the model needs to load (catalog data)
    adapters = adapters_of(ws)
    if adapters:
        options["enable-lora"] = True
        options["lora-modules"] = [f"{name}={adapters_dir}/{name}" for name, _ in adapters]
        options["max-lora-rank"] = DEFAULT_MAX_LORA_RANK
    for key, value in (config or {}).items():
        flag = str(key).strip().lstrip("-").replace("_", "-")
        if flag not in RESERVED_VLLM_KEYS:
            options[flag] = value
    return _render(options)


def _dtype(resolved: Resolved) -> str:
    """The model's dtype for vLLM's --dtype: bfloat16 becomes float16 on GPUs without it
    (V100, T4); quantized checkpoints (fp8, mxfp4) are `auto`: vLLM reads them from the
    checkpoint's own quantization config and accepts only float types here. On a CPU-only
    node it is float32, as the CPU layout sizes it (presets.layout): most CPUs have no fast
    16-bit matrix math, and SmolLM2-135M in bfloat16 no longer answers correctly."""
    model, sku = resolved.model, resolved.instance_type
    if runs_on_cpu(sku):
        return "float32"
    if model is None or model.dtype not in VLLM_DTYPES:
        return "auto"
    if model.dtype == "bfloat16" and sku is not None and sku.gpu_count and not sku.bf16:
        return "float16"
    return model.dtype


def _render(options: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for flag, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            args.append(f"--{flag}")
        elif isinstance(value, list | tuple):
            args += [f"--{flag}", *(str(v) for v in value)]
        elif isinstance(value, Mapping):
            args += [f"--{flag}", _json(value)]
        else:
            args += [f"--{flag}", str(value)]
    return args


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def vllm_command(
    ws: Workspace,
    resolved: Resolved,
    *,
    adapters_dir: str = "/mnt/adapters",
    config: Mapping[str, Any] | None = None,
    api_key_file: str | None = None,
) -> list[str]:
    front = [
        PYTHON,
        "-m",
        "runtime.serving.vllm_front",
        "--port",
        str(SERVER_PORT),
        "--vllm-port",
        str(VLLM_PORT),
    ]
    if api_key_file:  # the front checks the key; vLLM listens on the pod's loopback only
        front += ["--api-key-file", api_key_file]
    front.append("--")
    return front + vllm_arguments(ws, resolved, adapters_dir=adapters_dir, config=config)


def inference_command(
    ws: Workspace,
    resolved: Resolved,
    *,
    adapters_dir: str = "/mnt/adapters",
    config: Mapping[str, Any] | None = None,
    api_key_file: str | None = None,
) -> list[str]:
    """The container command of the inference pod for `ws` (see the module docstring)."""
    if resolved.runtime == "transformers":
        return transformers_command(ws, resolved, adapters_dir=adapters_dir, config=config,
                                    api_key_file=api_key_file)
    if resolved.runtime == "vllm":
        return vllm_command(ws, resolved, adapters_dir=adapters_dir, config=config,
                            api_key_file=api_key_file)
    raise CommandError(f"runtime {resolved.runtime!r} is not one of vllm, transformers")
