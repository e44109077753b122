"""Bake a LoRA adapter's strength into its weights, for runtimes that cannot scale adapters.

Why: vLLM's `--lora-modules NAME=PATH` always applies an adapter at full strength, but a
Workspace may ask for `strength: "0.5"`. A LoRA layer adds `s * scaling * B(A(x))` to the
base layer's output, which is linear in B, so multiplying every `lora_B` tensor (weight and,
with `lora_bias`, bias; `lora_embedding_B` for embeddings) by `s` gives exactly the adapter
at strength `s`. The adapter puller (runtime.adapters `pull --scale`) calls this on
the vLLM runtime only; our transformers server applies strength itself.

What it must not do: touch anything but `adapter_model.safetensors` in the given directory,
leave a half-written file behind, or rescale adapters for which the rule is not exact
(DoRA's magnitude vectors, `modules_to_save` copies, other peft types): those are refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from runtime.jobstep import ConfigError, DataError

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
B_PARTS = frozenset({"lora_B", "lora_embedding_B"})


def is_lora_b(key: str) -> bool:
    """True for the tensors of a LoRA up-projection (`...q_proj.lora_B.weight`)."""
    return not B_PARTS.isdisjoint(key.split("."))


def _check_config(directory: Path) -> None:
    try:
        config: Any = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {directory / CONFIG}: {exc}") from exc
    if not isinstance(config, dict):
        raise DataError(f"{directory / CONFIG} is not a JSON object")
    kind = str(config.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise DataError(f"adapter strength can only be applied to LoRA adapters, not {kind}")
    if config.get("use_dora"):
        raise DataError("adapter strength cannot be applied to a DoRA adapter on vLLM")
    if config.get("modules_to_save"):
        raise DataError("adapter strength cannot be applied to an adapter with modules_to_save")


def scale_adapter(directory: Path, factor: float) -> int:
    """Multiply every lora_B tensor in `directory`'s adapter by `factor`; return their count."""
    if not math.isfinite(factor):
        raise ConfigError(f"--scale {factor!r} must be a finite number")
    _check_config(directory)
    path = directory / WEIGHTS
    if not path.is_file():
        raise DataError(f"{directory} has no {WEIGHTS}; only safetensors adapters can be scaled")
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    try:
        with safe_open(str(path), framework="pt") as reader:
            metadata = reader.metadata()
            names = list(reader.keys())
            tensors = {key: reader.get_tensor(key) for key in names}
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path} is not a readable safetensors file: {exc}") from exc
    keys = [key for key in tensors if is_lora_b(key)]
    if not keys:
        raise DataError(f"{path} holds no lora_B tensors: is it a LoRA adapter?")
    for key in keys:
        tensor = tensors[key]
        tensors[key] = (tensor.double() * factor).to(tensor.dtype)
    partial = path.with_name(f".{WEIGHTS}.partial")
    try:
        save_file(tensors, str(partial), metadata=metadata)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return len(keys)
