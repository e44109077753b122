"""`validate_object`: every rule a Workspace must pass, all errors at once, with field paths.

The webhook, the reconciler and `kaito validate` call this one function. It parses
leniently (fields of the wrong type become errors, the rest is still checked), then runs
the metadata, resource, GPU-fit, inference/tuning and (on update) immutability rules.
`warnings_for` says what was accepted but deserves a word. Neither raises on any JSON
value, and neither does I/O: the catalog and options are parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crds.workspace import (
    ANNOTATION_BYPASS,
    ANNOTATION_MAX_MODEL_LEN,
    ANNOTATION_PROVISIONER,
    ANNOTATION_RUNTIME,
    API_VERSIONS,
    KIND,
    PROVISIONERS,
    FieldError,
    Workspace,
    parse_workspace_lenient,
    provisioner_of,
)
from presets.catalog import Catalog, ModelSpec
from presets.expand import RUNTIMES, parse_max_model_len, runs_on_cpu
from presets.validate.annotations import check_annotations
from presets.validate.net import dns_label_problem, image_case_warning
from presets.validate.preset import is_hf_id
from presets.validate.resource import check_fit, check_mig_fit, check_node_cap, check_resource
from presets.validate.spec import check_inference, check_tuning
from presets.validate.update import check_update

__all__ = ["ValidationOptions", "validate_object", "validate_workspace", "warnings_for"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationOptions:
    """Limits an operator may change. `require_instance_type=False` is bring-your-own-nodes mode."""

    max_nodes: int = 8
    max_adapters: int = 10
    require_instance_type: bool = True

    @classmethod
    def for_provisioner(cls, provisioner: str) -> ValidationOptions:
        """The options of an install whose default provisioner is `provisioner` (one of
        crds PROVISIONERS): with `byo` a label selector alone names the nodes, so no
        instanceType is required. The webhook and the reconciler both use this one rule."""
        return cls(require_instance_type=provisioner != "byo")


def _metadata(ws: Workspace, catalog: Catalog) -> list[FieldError]:
    out: list[FieldError] = []
    name = ws.metadata.name
    if not name:
        out.append(FieldError(path="metadata.name", type="Required", message="a name is required"))
    else:
        problem = dns_label_problem(name)
        if problem:
            kind = "TooLong" if len(name) > 63 else "Invalid"
            out.append(FieldError(path="metadata.name", type=kind, message=problem, value=name))
    annotations = ws.annotations
    runtime = annotations.get(ANNOTATION_RUNTIME)
    path = f"metadata.annotations[{ANNOTATION_RUNTIME}]"
    if runtime is not None and runtime not in RUNTIMES:
        message = f"unsupported runtime {runtime!r}: must be one of vllm, transformers"
        out.append(FieldError(path=path, type="NotSupported", message=message, value=runtime))
    preset = ws.inference.preset if ws.inference is not None else None
    model = catalog.model(preset.name) if preset is not None and preset.name else None
    if model is not None and runtime == "vllm" and model.runtime == "transformers":
        problem = _vllm_on_cpu_problem(ws, model, catalog)
        if problem:
            out.append(FieldError(path=path, type="Invalid", message=problem, value=runtime))
    out += _max_model_len(
        annotations.get(ANNOTATION_MAX_MODEL_LEN), model.context_length if model else None
    )
    return out + _provisioner(annotations)


def _vllm_on_cpu_problem(ws: Workspace, model: ModelSpec, catalog: Catalog) -> str | None:
    """Why vLLM cannot serve this transformers preset, or None: only the presets the catalog
    marks vllmOnCpu, and only on a CPU-only instance type (vLLM's CPU image)."""
    if not model.vllm_on_cpu:
        return f"preset {model.name} runs only on the transformers runtime"
    name = ws.resource.instance_type if ws.resource is not None else None
    sku = catalog.instance_type(name) if name else None
    if runs_on_cpu(sku):
        return None
    where = f"instance type {name} has GPUs" if sku is not None else (
        "name a CPU-only resource.instanceType" if not name
        else f"instance type {name} is not in the catalog")
    return (f"preset {model.name} runs on vLLM only from vLLM's CPU image, on a CPU-only "
            f"instance type ({where}); on GPUs it runs on the transformers runtime")


def _provisioner(annotations: Mapping[str, str]) -> list[FieldError]:
    """The reconciler's own rule (crds.workspace.provisioner_of), refused at admission."""
    raw = annotations.get(ANNOTATION_PROVISIONER)
    if raw is None:
        return []
    try:
        provisioner_of(annotations, PROVISIONERS[0])
    except ValueError as exc:
        path = f"metadata.annotations[{ANNOTATION_PROVISIONER}]"
        return [FieldError(path=path, type="NotSupported", message=str(exc), value=raw)]
    return []


def _max_model_len(raw: str | None, limit: int | None) -> list[FieldError]:
    if raw is None:
        return []
    path = f"metadata.annotations[{ANNOTATION_MAX_MODEL_LEN}]"
    value = parse_max_model_len(raw)
    if value is None:
        return [
            FieldError(path=path, type="Invalid", message="must be a positive integer", value=raw)
        ]
    if limit is not None and value > limit:
        message = f"max-model-len {value} exceeds the model's context length {limit}"
        return [FieldError(path=path, type="Invalid", message=message, value=raw)]
    return []


def _type_meta(ws: Workspace) -> list[FieldError]:
    out: list[FieldError] = []
    if ws.api_version is None:
        out.append(FieldError(path="apiVersion", type="Required", message="apiVersion is required"))
    elif ws.api_version not in API_VERSIONS:
        message = (
            f"unsupported apiVersion {ws.api_version!r}: must be one of {', '.join(API_VERSIONS)}"
        )
        out.append(
            FieldError(
                path="apiVersion", type="NotSupported", message=message, value=ws.api_version
            )
        )
    if ws.kind != KIND:
        out.append(
            FieldError(path="kind", type="Invalid", message="kind must be Workspace", value=ws.kind)
        )
    return out


def _workload(ws: Workspace, catalog: Catalog, options: ValidationOptions) -> list[FieldError]:
    if ws.inference is not None and ws.tuning is not None:
        message = "exactly one of inference or tuning may be set, not both"
        return [FieldError(path="tuning", type="Forbidden", message=message)]
    if ws.inference is not None:
        return check_inference(ws.inference, catalog, options.max_adapters)
    if ws.tuning is not None:
        return check_tuning(ws.tuning, catalog)
    return [
        FieldError(
            path="inference",
            type="Required",
            message="exactly one of inference or tuning is required",
        )
    ]


def _dedupe(errors: list[FieldError]) -> list[FieldError]:
    seen: set[tuple[str, str, str]] = set()
    out: list[FieldError] = []
    for e in errors:
        key = (e.path, e.type, e.message)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def validate_object(
    obj: Any,
    catalog: Catalog,
    old: Any = None,
    options: ValidationOptions | None = None,
) -> list[FieldError]:
    """Every rule violation in `obj` (and, on update, against `old`). Never raises."""
    opts = options or ValidationOptions()
    if not isinstance(obj, Mapping):
        return [
            FieldError(path="<root>", type="Invalid", message="a Workspace must be a JSON object")
        ]
    ws, errors = parse_workspace_lenient(obj)
    previous = parse_workspace_lenient(old)[0] if isinstance(old, Mapping) else None
    return validate_workspace(ws, catalog, parse_errors=errors, old=previous, options=opts)


def validate_workspace(
    ws: Workspace,
    catalog: Catalog,
    *,
    parse_errors: list[FieldError] | None = None,
    old: Workspace | None = None,
    options: ValidationOptions | None = None,
) -> list[FieldError]:
    """`validate_object` for a Workspace already parsed (with its lenient parse's errors)."""
    opts = options or ValidationOptions()
    errors = list(parse_errors or ())
    errors += _type_meta(ws)
    errors += _metadata(ws, catalog)
    errors += check_annotations(ws)
    errors += check_mig_fit(ws, catalog)
    errors += _workload(ws, catalog, opts)
    errors += check_resource(ws, catalog, opts.require_instance_type)
    errors += check_fit(ws, catalog, opts.max_nodes)
    errors += check_node_cap(ws, opts.max_nodes)
    if old is not None:
        errors += check_update(ws, old, byo=not opts.require_instance_type)
    return _dedupe(errors)


def warnings_for(obj: Any, catalog: Catalog, old: Any = None) -> list[str]:
    """What was accepted but deserves a word (admission warnings, CLI stderr)."""
    if not isinstance(obj, Mapping):
        return []
    ws, _ = parse_workspace_lenient(obj)
    out: list[str] = []
    for section, spec in (("inference", ws.inference), ("tuning", ws.tuning)):
        preset = spec.preset if spec is not None else None
        name = preset.name if preset is not None else None
        if section == "inference" and name and catalog.model(name) is None and is_hf_id(name):
            out.append(
                f"inference.preset.name: {name} is not in the catalog and is served as a Hugging "
                "Face model id; its GPU fit cannot be checked offline here: the reconciler sizes "
                "it from its config.json and safetensors index and refuses it in status when "
                "it does not fit"
            )
    if ANNOTATION_BYPASS in ws.annotations:
        out.append(
            f"metadata.annotations[{ANNOTATION_BYPASS}]: resource and GPU-fit checks are bypassed"
        )
    sku = ws.resource.instance_type if ws.resource is not None else None
    if sku and catalog.instance_type(sku) is None:
        out.append(
            f"resource.instanceType: {sku} is not a known instance type; GPU fit is not checked"
        )
    for path, image in _images(ws):
        warning = image_case_warning(image)
        if warning:
            out.append(f"{path}: {warning}")
    return out


def _images(ws: Workspace) -> list[tuple[str, str]]:
    """(field path, image) of every image reference the Workspace names."""
    found: list[tuple[str, str | None]] = []
    for section, spec in (("inference", ws.inference), ("tuning", ws.tuning)):
        options = spec.preset.preset_options if spec is not None and spec.preset else None
        found.append((f"{section}.preset.presetOptions.image", options.image if options else None))
    for i, adapter in enumerate((ws.inference.adapters if ws.inference else None) or ()):
        image = adapter.source.image if adapter.source is not None else None
        found.append((f"inference.adapters[{i}].source.image", image))
    if ws.tuning is not None:
        source, dest = ws.tuning.input, ws.tuning.output
        found.append(("tuning.input.image", source.image if source is not None else None))
        found.append(("tuning.output.image", dest.image if dest is not None else None))
    return [(path, image) for path, image in found if image]
