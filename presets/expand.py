"""Terse in, full out: fill the ABSENT fields of a Workspace from the catalogs.

`expand_object` adds only what is missing, never changes a value or a list the user
wrote, and is idempotent (`expand_object(expand_object(x)) == expand_object(x)`), so a
mutating webhook's patch is add-only and a second mutation is empty. It adds:

* `metadata.annotations`: `kaito.sh/catalog-revision`, and for inference presets
  `kaito.sh/runtime` and `kaito.sh/max-model-len`: the largest context the chosen
  instance type (or MIG slice) holds after the weights, capped at the model's own
  (`presets.layout`); left out when the GPUs are not known yet (bring-your-own nodes:
  the reconciler fits the context to the nodes it chooses);
* `resource.count`: the node count GPU fit computes (1 for tuning, templates and models
  the catalog does not know);
* `inference.preset.accessMode` (`private` for a preset the catalog marks private, else
  `public`) and `inference.preset.presetOptions.image` (never for a private preset: the
  user brings that image);
* `tuning.preset.presetOptions.image`.

`resolve` answers "how do we run it" from the expanded object first and the catalog
second, so a catalog upgrade never changes a running Workspace. Pure: no I/O, no clock.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from crds.workspace import (
    ANNOTATION_BYPASS,
    ANNOTATION_CATALOG_REVISION,
    ANNOTATION_MAX_MODEL_LEN,
    ANNOTATION_RUNTIME,
    FieldError,
    PresetOptions,
    PresetSpec,
    Workspace,
    parse_workspace_lenient,
)
from presets.catalog import Catalog, InstanceType, ModelSpec
from presets.layout import DEFAULT_MAX_NODES, Layout, default_max_model_len, layout
from presets.mig import profile_problem, resource_name, slice_as_instance_type

RUNTIMES = ("vllm", "transformers")
GPU_RESOURCE = "nvidia.com/gpu"
STORAGE_HEADROOM_GIB = 80
UNKNOWN_MODEL_STORAGE_GIB = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """Everything needed to run a Workspace, settled once."""

    workload: str  # "inference" | "tuning"
    preset: str | None
    model: ModelSpec | None
    instance_type: InstanceType | None
    node_count: int
    gpus_per_node: int
    max_model_len: int | None
    runtime: str
    image: str | None
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    replicas: int
    layout: str
    storage_gib: int
    gpu_resource: str = GPU_RESOURCE  # what a pod requests per GPU: a GPU or a MIG slice


def _preset(ws: Workspace) -> PresetSpec | None:
    if ws.inference is not None:
        return ws.inference.preset
    return ws.tuning.preset if ws.tuning is not None else None


def parse_max_model_len(value: str | None) -> int | None:
    """The annotation's integer, or None when absent or not a positive decimal integer."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if 0 < number < 2**31 else None


def _runtime(ws: Workspace, model: ModelSpec | None) -> str:
    if ws.tuning is not None and ws.inference is None:
        return "transformers"
    chosen = ws.annotations.get(ANNOTATION_RUNTIME)
    if chosen in RUNTIMES:
        return str(chosen)
    return model.runtime if model else "vllm"


def runs_on_cpu(sku: InstanceType | None) -> bool:
    """A known instance type without GPUs: vLLM runs there from its CPU build."""
    return sku is not None and sku.gpu_count == 0


def _image(
    ws: Workspace, model: ModelSpec | None, runtime: str, sku: InstanceType | None,
    catalog: Catalog,
) -> str | None:
    preset = _preset(ws)
    if preset is None:
        return None
    if preset.preset_options is not None and preset.preset_options.image:
        return preset.preset_options.image
    if ws.inference is None:
        return catalog.images.get("tuning")
    if model is not None and model.access == "private":
        return None  # the user must bring the image
    if runtime == "vllm" and runs_on_cpu(sku):
        return catalog.images.get("vllm-cpu")
    if model is not None and model.runtime == runtime:
        return model.image
    return catalog.images.get(runtime)


def _layout(
    ws: Workspace, model: ModelSpec | None, sku: InstanceType | None,
    mml: int | None, count: int | None,
) -> Layout | None:
    """The GPU layout of an inference preset the catalog knows on a known SKU, else None."""
    if ws.inference is None or model is None or sku is None:
        return None
    return layout(model, sku, max_model_len=mml, count=count, max_nodes=DEFAULT_MAX_NODES)


def _mig_profile(ws: Workspace) -> str | None:
    part = ws.resource.partition if ws.resource is not None else None
    profile = part.get("profile") if part and part.get("mode") == "mig" else None
    return profile if isinstance(profile, str) and profile_problem(profile) is None else None


def _accelerators(ws: Workspace, node_gpus: InstanceType | None) -> InstanceType | None:
    """The node's GPUs, or `partition.count` of them in accelerator mode."""
    part = ws.resource.partition if ws.resource is not None else None
    count = part.get("count") if part and part.get("mode") == "accelerator" else None
    if node_gpus is None or not isinstance(count, int) or isinstance(count, bool):
        return node_gpus
    return replace(node_gpus, gpu_count=max(1, min(count, node_gpus.gpu_count)))


def resolve(
    ws: Workspace,
    catalog: Catalog,
    *,
    max_model_len: int | None = None,
    node_gpus: InstanceType | None = None,
) -> Resolved:
    """How to run `ws`: read from the (expanded) object first, the catalog second.

    `max_model_len`, when given (the `vllm` section of the user's inference ConfigMap),
    wins over the `kaito.sh/max-model-len` annotation. The GPUs the layout is computed
    for are the instance type's; else one slice of a MIG partition; else `node_gpus`, the
    GPUs of the bring-your-own nodes chosen (read from their labels by the reconciler)."""
    preset = _preset(ws)
    name = preset.name if preset is not None else None
    model = catalog.model(name) if name else None
    resource = ws.resource
    sku = (
        catalog.instance_type(resource.instance_type)
        if resource and resource.instance_type
        else None
    )
    explicit = max_model_len or parse_max_model_len(ws.annotations.get(ANNOTATION_MAX_MODEL_LEN))
    runtime = _runtime(ws, model)
    count = resource.count if resource is not None and resource.count else None
    mig = _mig_profile(ws)
    fit_sku = sku or (slice_as_instance_type(mig) if mig else _accelerators(ws, node_gpus))
    gpus = fit_sku.gpu_count if fit_sku is not None else 0
    lay = _layout(ws, model, fit_sku, explicit, count)
    if lay is not None:
        mml: int | None = lay.max_model_len
        node_count, tp, pp = lay.node_count, max(lay.tensor_parallel, 1), lay.pipeline_parallel
        dp, replicas, summary = lay.data_parallel, lay.replicas, lay.summary()
    else:
        mml = explicit or (default_max_model_len(model) if model is not None else None)
        node_count, tp, pp, dp, replicas, summary = count or 1, 1, 1, 1, 1, ""
        if ws.inference is not None and gpus and model is None:
            tp, pp = gpus, node_count  # a Hugging Face id the catalog lacks: every GPU, every node
    storage = (
        math.ceil(model.weights_gib) + STORAGE_HEADROOM_GIB if model else UNKNOWN_MODEL_STORAGE_GIB
    )
    return Resolved(
        workload="tuning" if ws.inference is None and ws.tuning is not None else "inference",
        preset=name,
        model=model,
        instance_type=sku,
        node_count=node_count,
        gpus_per_node=gpus,
        max_model_len=mml,
        runtime=runtime,
        image=_image(ws, model, runtime, sku, catalog),
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        data_parallel_size=dp,
        replicas=replicas,
        layout=summary,
        storage_gib=storage,
        gpu_resource=resource_name(mig) if mig else GPU_RESOURCE,
    )


def _child(parent: dict[str, Any], key: str) -> dict[str, Any]:
    if parent.get(key) is None:
        parent[key] = {}
    child: dict[str, Any] = parent[key]
    return child


def _put(parent: dict[str, Any], key: str, value: Any) -> None:
    if parent.get(key) is None and value is not None:
        parent[key] = value


def _fill_preset(section: dict[str, Any], image: str | None, *, access_mode: str | None) -> None:
    preset = section.get("preset")
    if not isinstance(preset, dict):
        return
    if access_mode is not None:
        _put(preset, "accessMode", access_mode)
    private = preset.get("accessMode") == "private"  # the user brings the image
    if (
        image is not None
        and not private
        and (preset.get("presetOptions") or {}).get("image") is None
    ):
        _put(_child(preset, "presetOptions"), "image", image)


@dataclass(frozen=True, slots=True)
class Expansion:
    """The expanded object (for the API and the patch) and its typed form, parsed once."""

    obj: dict[str, Any]
    ws: Workspace
    errors: list[FieldError]  # the lenient parse's errors: the object was left as it came


def _with_annotations(ws: Workspace, added: Mapping[str, str]) -> Workspace:
    merged = dict(ws.metadata.annotations or {})
    merged.update((k, v) for k, v in added.items() if merged.get(k) is None)
    return replace(ws, metadata=replace(ws.metadata, annotations=merged))


def _with_preset(spec: Any, image: str | None, access_mode: str | None) -> Any:
    """The typed twin of _fill_preset for an Inference or Tuning section."""
    preset = spec.preset
    if preset is None:
        return spec
    if access_mode is not None and preset.access_mode is None:
        preset = replace(preset, access_mode=access_mode)
    options = preset.preset_options
    if image is not None and preset.access_mode != "private" and (
        options is None or options.image is None
    ):
        preset = replace(preset, preset_options=replace(options or PresetOptions(), image=image))
    return replace(spec, preset=preset)


def expand(obj: Mapping[str, Any], catalog: Catalog) -> Expansion:
    """`expand_object` plus the typed form of its result, with one parse of `obj`.

    Each addition is decided once and written twice: into the JSON copy (the API edge) and
    into the parsed Workspace (`dataclasses.replace`), so `ws == parse(obj)` without a
    second parse (tests/presets/test_expand.py checks that on every example)."""
    out: dict[str, Any] = copy.deepcopy(dict(obj)) if isinstance(obj, Mapping) else {}
    ws, errors = parse_workspace_lenient(out)
    if errors or not isinstance(obj, Mapping):
        return Expansion(out, ws, errors)
    annotations = _child(_child(out, "metadata"), "annotations")
    added = {ANNOTATION_CATALOG_REVISION: catalog.revision}
    preset = _preset(ws)
    model = catalog.model(preset.name) if preset is not None and preset.name else None
    if ws.inference is not None and preset is not None and preset.name:
        added[ANNOTATION_RUNTIME] = _runtime(ws, model)
    for key, value in added.items():
        _put(annotations, key, value)
    ws = _with_annotations(ws, added)
    resolved = resolve(ws, catalog)
    explicit = parse_max_model_len(ws.annotations.get(ANNOTATION_MAX_MODEL_LEN))
    if ws.inference is not None and model is not None and resolved.layout:
        # only when the GPUs are known: bring-your-own nodes get theirs fitted at reconcile
        _put(annotations, ANNOTATION_MAX_MODEL_LEN, str(resolved.max_model_len))
    typed = _with_annotations(ws, dict(annotations))
    if ws.inference is not None and ws.tuning is None:
        mode = "private" if model is not None and model.access == "private" else "public"
        _fill_preset(out["inference"], resolved.image, access_mode=mode)
        typed = replace(typed, inference=_with_preset(ws.inference, resolved.image, mode))
    elif ws.tuning is not None and ws.inference is None:
        _fill_preset(out["tuning"], resolved.image, access_mode=None)
        typed = replace(typed, tuning=_with_preset(ws.tuning, resolved.image, None))
    if isinstance(out.get("resource"), dict) and ws.resource is not None:
        lay = _layout(ws, resolved.model, resolved.instance_type, explicit, None)
        needed = lay.nodes if lay is not None else 1
        if needed == 0 and ANNOTATION_BYPASS in annotations:
            needed = 1
        _put(out["resource"], "count", needed or None)
        if ws.resource.count is None and needed:
            typed = replace(typed, resource=replace(ws.resource, count=needed))
    return Expansion(out, typed, [])


def expand_object(obj: Mapping[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A deep copy of `obj` with only ABSENT fields added (see the module docstring)."""
    return expand(obj, catalog).obj
