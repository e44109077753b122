"""Terse in, full out: fill the ABSENT fields of a Workspace from the catalogs.

`expand_object` adds only what is missing, never changes a value or a list the user
wrote, and is idempotent (`expand_object(expand_object(x)) == expand_object(x)`), so a
mutating webhook's patch is add-only and a second mutation is empty. It adds:

* `metadata.annotations`: `kaito.sh/catalog-revision`, and for inference presets
  `kaito.sh/runtime` and `kaito.sh/max-model-len` (min(context length, 4096));
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
from dataclasses import dataclass
from typing import Any

from crds.workspace import (
    ANNOTATION_BYPASS,
    ANNOTATION_CATALOG_REVISION,
    ANNOTATION_MAX_MODEL_LEN,
    ANNOTATION_RUNTIME,
    PresetSpec,
    Workspace,
    parse_workspace_lenient,
)
from presets.catalog import Catalog, InstanceType, ModelSpec
from presets.fit import DEFAULT_MAX_NODES, default_max_model_len, nodes_needed, tensor_parallel_size

RUNTIMES = ("vllm", "transformers")
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
    storage_gib: int


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


def _image(ws: Workspace, model: ModelSpec | None, runtime: str, catalog: Catalog) -> str | None:
    preset = _preset(ws)
    if preset is None:
        return None
    if preset.preset_options is not None and preset.preset_options.image:
        return preset.preset_options.image
    if ws.inference is None:
        return catalog.images.get("tuning")
    if model is not None and (model.access == "private" or model.runtime == runtime):
        return model.image  # None for a private preset: the user must bring the image
    return catalog.images.get(runtime)


def _needed(
    ws: Workspace, model: ModelSpec | None, sku: InstanceType | None, mml: int | None
) -> int:
    """Nodes the GPU fit asks for; 1 when it cannot tell; 0 when nothing fits."""
    if ws.inference is None or model is None or sku is None or mml is None:
        return 1
    return nodes_needed(model, sku, mml, DEFAULT_MAX_NODES)


def resolve(ws: Workspace, catalog: Catalog) -> Resolved:
    """How to run `ws`: read from the (expanded) object first, the catalog second."""
    preset = _preset(ws)
    name = preset.name if preset is not None else None
    model = catalog.model(name) if name else None
    resource = ws.resource
    sku = (
        catalog.instance_type(resource.instance_type)
        if resource and resource.instance_type
        else None
    )
    mml = parse_max_model_len(ws.annotations.get(ANNOTATION_MAX_MODEL_LEN))
    if mml is None and model is not None:
        mml = default_max_model_len(model)
    runtime = _runtime(ws, model)
    needed = _needed(ws, model, sku, mml)
    count = resource.count if resource is not None and resource.count else None
    node_count = count or needed or 1
    gpus = sku.gpu_count if sku is not None else 0
    tp, pp = 1, 1
    if ws.inference is not None and gpus:
        tp = tensor_parallel_size(model, gpus) if model is not None else gpus
        distributed = model is None or model.distributed
        # one pipeline stage per node we run: a count above the minimum leaves no node idle
        pp = node_count if distributed else 1
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
        image=_image(ws, model, runtime, catalog),
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        storage_gib=storage,
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


def expand_object(obj: Mapping[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A deep copy of `obj` with only ABSENT fields added (see the module docstring)."""
    out: dict[str, Any] = copy.deepcopy(dict(obj)) if isinstance(obj, Mapping) else {}
    ws, errors = parse_workspace_lenient(out)
    if errors or not isinstance(obj, Mapping):
        return out
    annotations = _child(_child(out, "metadata"), "annotations")
    _put(annotations, ANNOTATION_CATALOG_REVISION, catalog.revision)
    preset = _preset(ws)
    model = catalog.model(preset.name) if preset is not None and preset.name else None
    if ws.inference is not None and preset is not None and preset.name:
        _put(annotations, ANNOTATION_RUNTIME, _runtime(ws, model))
        if model is not None:
            _put(annotations, ANNOTATION_MAX_MODEL_LEN, str(default_max_model_len(model)))
    ws, _ = parse_workspace_lenient(out)
    resolved = resolve(ws, catalog)
    if ws.inference is not None and ws.tuning is None:
        mode = "private" if model is not None and model.access == "private" else "public"
        _fill_preset(out["inference"], resolved.image, access_mode=mode)
    elif ws.tuning is not None and ws.inference is None:
        _fill_preset(out["tuning"], resolved.image, access_mode=None)
    if isinstance(out.get("resource"), dict):
        needed = _needed(ws, resolved.model, resolved.instance_type, resolved.max_model_len)
        if needed == 0 and ANNOTATION_BYPASS in annotations:
            needed = 1
        _put(out["resource"], "count", needed or None)
    return out
