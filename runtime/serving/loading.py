"""Loads the served model: weights through runtime.weights, then transformers + adapters.

Why: the model server (and the benchmark) need one place that turns `--model`,
`--revision` and `--adapter` into a ready transformers model + tokenizer. Where the
weights come from (a directory, the image's baked presets, the node cache, the Hub, an OCI
artifact) is the weights layer's business; this module only loads what it returns.
What it must not do: download anything itself, force offline mode when the weights still
have to be fetched (HF_HUB_OFFLINE is set only when told or when they are already local),
or serve HTTP.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.serving.settings import AdapterSpec, ServerSettings
from runtime.weights import WeightsSettings, ensure, is_local, parse_source
from runtime.weights.settings import OFFLINE_ENV

COMBINED_KEY = "combined"


class ModelSourceError(RuntimeError):
    """An adapter cannot be found or loaded; the message says what to do."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """What the engine needs: the (possibly peft-wrapped) model and its tokenizer."""

    model: Any
    tokenizer: Any
    model_id: str
    max_model_len: int
    adapter_keys: dict[str, str]  # public adapter name -> peft adapter name (strength applied)
    combined_key: str | None


def prepare_environment(environ: MutableMapping[str, str], *, weights_local: bool) -> None:
    """Quiet progress bars; go hub-offline only when told or when the weights are local.

    Call before importing transformers (huggingface_hub reads these at import)."""
    if weights_local or environ.get(OFFLINE_ENV, "") == "1":
        environ["HF_HUB_OFFLINE"] = "1"
    environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    environ.setdefault("TQDM_DISABLE", "1")
    environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def weights_settings(environ: Mapping[str, str], cache: Path | None = None) -> WeightsSettings:
    settings = WeightsSettings.from_env(environ)
    return settings if cache is None else dataclasses.replace(settings, cache=cache)


def weights_are_local(model: str, revision: str | None, environ: Mapping[str, str]) -> bool:
    """True when `model` needs no network (a directory, or already in a cache)."""
    return is_local(parse_source(model, revision), weights_settings(environ))


def resolve_model_dir(model: str, *, cache: Path, revision: str | None = None) -> Path:
    """A directory with config.json for `model` (see runtime.weights), cached under `cache`."""
    return ensure(parse_source(model, revision), weights_settings(os.environ, cache)).path


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
    source = parse_source(settings.model, settings.revision)
    prepare_environment(environ, weights_local=is_local(source, weights_settings(environ)))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    directory = ensure(source, weights_settings(environ)).path
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
