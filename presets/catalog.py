"""Loads and checks the two catalogs (`models.yaml`, `instance_types.yaml`).

The catalogs are data: every model fact and every SKU lives in the YAML files, none in
code. Every entry is checked when loaded and a broken catalog raises `CatalogError`
listing every problem at once, so a bad edit fails at start-up and in the test of the
shipped files, never halfway through a request. There is no module-level singleton: the
caller loads a `Catalog` once and passes it around. This module reads files only in
`load_catalog`; it must not reach the network or know any Workspace rule.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from presets.catalog_checks import check_instance_types, check_models

HERE = Path(__file__).resolve().parent
MODELS_FILE = HERE / "models.yaml"
INSTANCE_TYPES_FILE = HERE / "instance_types.yaml"
GIB = 1024**3
KV_CACHE_DTYPE_BYTES = 2  # vLLM and our server keep the KV cache in 16-bit floats


class CatalogError(ValueError):
    """A catalog file is unreadable or has broken entries; `.problems` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("broken catalog:\n  " + "\n  ".join(problems))


def kv_bytes_per_token(
    layers: int,
    kv_heads: int,
    head_dim: int,
    *,
    kv_lora_rank: int | None = None,
    qk_rope_head_dim: int | None = None,
) -> int:
    """Bytes of 16-bit KV cache one token of context takes, over all layers.

    Multi-head, grouped and multi-query attention cache K and V for every KV head:
    2 x layers x KV heads x head dim elements. Multi-head latent attention (MLA: DeepSeek
    V3/R1, Mistral Large 3) caches one compressed latent of kv_lora_rank elements plus the
    shared rotary key of qk_rope_head_dim elements per layer, and no separate V.
    """
    if kv_lora_rank is not None and qk_rope_head_dim is not None:
        return layers * (kv_lora_rank + qk_rope_head_dim) * KV_CACHE_DTYPE_BYTES
    return 2 * layers * kv_heads * head_dim * KV_CACHE_DTYPE_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """One preset: the facts GPU fit, expansion and the runtime need.

    `image` is None for a private preset (`access == "private"`): the Workspace must name
    its own image in presetOptions.image. A `deprecated` preset is still known (so that
    a stored Workspace resolves) but refused at admission; `replaced_by` names what to
    use instead. `kv_lora_rank` and `qk_rope_head_dim` are set only for MLA models.
    """

    name: str
    hf_id: str
    family: str
    parameters_b: float
    dtype: str
    weights_gib: float
    context_length: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    kv_bytes_per_token: int
    runtime: str
    image: str | None
    distributed: bool
    tuning: bool
    access: str
    license: str
    lora_target_modules: tuple[str, ...] = ()
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    deprecated: bool = False
    replaced_by: tuple[str, ...] = ()
    vllm_args: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    revision: str | None = None  # the Hugging Face commit the weights are fetched at
    weights_in_image: bool = False  # the transformers runtime image bakes the weights
    vllm_on_cpu: bool = False  # vLLM's CPU build serves this transformers preset too

    def kv_cache_gib(self, tokens: int) -> float:
        """KV cache for `tokens` tokens of context, in GiB."""
        return self.kv_bytes_per_token * tokens / GIB


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceType:
    """One node SKU. `gpu_memory_gib` is per GPU; `gpu_count == 0` means a CPU-only node."""

    name: str
    cloud: str
    gpu_model: str | None
    gpu_count: int
    gpu_memory_gib: float
    vcpu: int
    memory_gib: float
    relative_cost: float
    bf16: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalog:
    """Both catalogs, looked up by name. `revision` is a hash of their content."""

    revision: str
    models: Mapping[str, ModelSpec]
    instance_types: Mapping[str, InstanceType]
    images: Mapping[str, str] = field(default_factory=dict)
    cost_source: str = ""
    cost_date: str = ""

    def model(self, name: str) -> ModelSpec | None:
        if not isinstance(name, str):
            return None
        return self.models.get(name) or self.models.get(name.lower())

    def instance_type(self, name: str) -> InstanceType | None:
        if not isinstance(name, str):
            return None
        found = self.instance_types.get(name)
        if found is not None:
            return found
        lowered = name.lower()
        for key, value in self.instance_types.items():
            if key.lower() == lowered:
                return value
        return None


def _read(path: Path, problems: list[str]) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: not valid YAML: {exc}")
    return None


def _model(raw: Mapping[str, Any]) -> ModelSpec:
    layers, kv_heads, head_dim = raw["numLayers"], raw["numKVHeads"], raw["headDim"]
    rank, rope = raw.get("kvLoraRank"), raw.get("qkRopeHeadDim")
    return ModelSpec(
        name=raw["name"],
        hf_id=raw["hfId"],
        family=raw["family"],
        parameters_b=float(raw["parametersB"]),
        dtype=raw["dtype"],
        weights_gib=float(raw["weightsGiB"]),
        context_length=raw["contextLength"],
        num_layers=layers,
        num_attention_heads=raw["numAttentionHeads"],
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        kv_bytes_per_token=kv_bytes_per_token(
            layers, kv_heads, head_dim, kv_lora_rank=rank, qk_rope_head_dim=rope
        ),
        runtime=raw["runtime"],
        image=raw.get("image"),
        distributed=raw["distributed"],
        tuning=raw["tuning"],
        access=raw["access"],
        license=raw["license"],
        lora_target_modules=tuple(raw.get("loraTargetModules") or ()),
        kv_lora_rank=rank,
        qk_rope_head_dim=rope,
        deprecated=raw.get("deprecated", False),
        replaced_by=tuple(raw.get("replacedBy") or ()),
        vllm_args=MappingProxyType(dict(raw.get("vllmArgs") or {})),
        revision=raw.get("revision"),
        weights_in_image=raw.get("weightsInImage", False),
        vllm_on_cpu=raw.get("vllmOnCpu", False),
    )


def _instance_type(raw: Mapping[str, Any]) -> InstanceType:
    gpu_model = raw["gpuModel"]
    return InstanceType(
        name=raw["name"],
        cloud=raw["cloud"],
        gpu_model=None if gpu_model == "none" else gpu_model,
        gpu_count=raw["gpuCount"],
        gpu_memory_gib=float(raw["gpuMemoryGiB"]),
        vcpu=raw["vcpu"],
        memory_gib=float(raw["memoryGiB"]),
        relative_cost=float(raw["relativeCost"]),
        bf16=raw["bf16"],
    )


def _revision(models_doc: Any, types_doc: Any) -> str:
    canonical = json.dumps([models_doc, types_doc], sort_keys=True, separators=(",", ":"))
    return "sha256-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"; did you mean A or B?" for up to three known names close to `name` (any case), else "".

    The one wording of the hint every refusal of an unknown name gives (presets, instance
    types, `kaito fit`)."""
    by_lower = {k.lower(): k for k in known}
    close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower),
                                                            n=3, cutoff=0.6)]
    return f"; did you mean {' or '.join(close)}?" if close else ""


def load_catalog(models: Path | None = None, instance_types: Path | None = None) -> Catalog:
    """Load and check both catalogs (the shipped files by default); raise CatalogError."""
    problems: list[str] = []
    models_path = models or MODELS_FILE
    types_path = instance_types or INSTANCE_TYPES_FILE
    models_doc = _read(models_path, problems)
    types_doc = _read(types_path, problems)
    if not problems:
        problems += [f"{models_path.name}: {p}" for p in check_models(models_doc)]
        problems += [f"{types_path.name}: {p}" for p in check_instance_types(types_doc)]
    if problems:
        raise CatalogError(problems)
    model_specs = {m["name"]: _model(m) for m in models_doc["models"]}
    types = {t["name"]: _instance_type(t) for t in types_doc["instanceTypes"]}
    return Catalog(
        revision=_revision(models_doc, types_doc),
        models=MappingProxyType(model_specs),
        instance_types=MappingProxyType(types),
        images=MappingProxyType(dict(models_doc["images"])),
        cost_source=" ".join(str(types_doc["costSource"]).split()),
        cost_date=str(types_doc["costDate"]),
    )
