"""A Hugging Face model the catalog does not list, sized from its own files (pure).

Why: a Workspace may name any `org/name` model. Its GPU fit needs the same facts a catalog
entry holds: weight bytes (the safetensors index's `metadata.total_size`, or the files'
sizes), context length and the KV-cache shape (layers, KV heads, head dim; or the MLA
pair) from config.json. The reconciler and `kaito fit` fetch those two files (the webhook
never does: admission must not wait on the network) and call `spec_from_hf`; the result is
added to a copy of the catalog (`with_model`) so that fit, expansion and validation treat
the model exactly like a preset.
What it must not do: any I/O; it reads only the mappings it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from presets.catalog import GIB, Catalog, ModelSpec, kv_bytes_per_token

# Bytes per parameter of each dtype the weight files may hold (for the parameter count).
DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0, "int8": 1.0,
               "mxfp4": 0.53, "int4": 0.5}
QUANTIZED = {"fp8": "fp8", "mxfp4": "mxfp4", "awq": "int4", "gptq": "int4", "bitsandbytes": "int4"}
DEFAULT_CONTEXT = 4096


class HfModelError(ValueError):
    """config.json lacks what sizing needs; the message names the missing keys."""


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language model's part of a config (multimodal models nest it as text_config)."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, Mapping) else config


def _int(cfg: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _dtype(cfg: Mapping[str, Any]) -> str:
    quant = cfg.get("quantization_config")
    if isinstance(quant, Mapping):
        method = str(quant.get("quant_method", "")).lower()
        if method in QUANTIZED:
            return QUANTIZED[method]
    raw = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").removeprefix("torch.")
    return raw if raw in DTYPE_BYTES else "bfloat16"


def spec_from_hf(hf_id: str, config: Mapping[str, Any], weights_bytes: int, *,
                 image: str | None) -> ModelSpec:
    """The catalog-shaped facts of `hf_id`, served by vLLM with `image`."""
    cfg = _text_config(config)
    layers = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(cfg, "num_attention_heads", "n_head")
    hidden = _int(cfg, "hidden_size", "n_embd", "d_model")
    missing = [name for name, value in (("num_hidden_layers", layers),
                                        ("num_attention_heads", heads),
                                        ("hidden_size", hidden)) if value is None]
    if missing or layers is None or heads is None or hidden is None:
        raise HfModelError(f"{hf_id}: config.json has no {', '.join(missing)}")
    if weights_bytes <= 0:
        raise HfModelError(f"{hf_id}: no safetensors weights found to size it")
    kv_heads = _int(cfg, "num_key_value_heads", "num_kv_heads") or heads
    head_dim = _int(cfg, "head_dim") or hidden // heads
    rank, rope = _int(cfg, "kv_lora_rank"), _int(cfg, "qk_rope_head_dim")
    if rank is None or rope is None:
        rank = rope = None
    dtype = _dtype(cfg)
    return ModelSpec(
        name=hf_id,
        hf_id=hf_id,
        family=str(cfg.get("model_type") or "unknown"),
        parameters_b=round(weights_bytes / DTYPE_BYTES[dtype] / 1e9, 2),
        dtype=dtype,
        weights_gib=round(weights_bytes / GIB, 2),
        context_length=_int(cfg, "max_position_embeddings", "n_positions", "seq_length")
        or DEFAULT_CONTEXT,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        kv_bytes_per_token=kv_bytes_per_token(layers, kv_heads, head_dim, kv_lora_rank=rank,
                                              qk_rope_head_dim=rope),
        runtime="vllm",
        image=image,
        distributed=True,
        tuning=False,
        access="public",
        license="unknown",
        kv_lora_rank=rank,
        qk_rope_head_dim=rope,
    )


def weights_bytes(index: Mapping[str, Any] | None, file_sizes: Mapping[str, int]) -> int:
    """Weight bytes: the index's metadata.total_size, else the *.safetensors files' sizes."""
    metadata = index.get("metadata") if isinstance(index, Mapping) else None
    total = metadata.get("total_size") if isinstance(metadata, Mapping) else None
    if isinstance(total, int) and total > 0:
        return total
    return sum(size for name, size in file_sizes.items() if name.endswith(".safetensors"))


def with_model(catalog: Catalog, spec: ModelSpec) -> Catalog:
    """A copy of `catalog` that also knows `spec` (its name is the Hugging Face id)."""
    models = dict(catalog.models)
    models[spec.name] = spec
    return dataclasses.replace(catalog, models=MappingProxyType(models))
