"""Rules for `resource`: the node selector, instance type, node count, partition, GPU fit.

The GPU-fit rule calls `presets.fit` and turns its verdict into a FieldError whose
message states the memory required, the memory available and the cheapest SKUs that
fit. Pure; must not raise on any input (the label selector is still raw JSON here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crds.workspace import (
    ANNOTATION_BYPASS,
    ANNOTATION_MAX_MODEL_LEN,
    ANNOTATION_PROVISIONER,
    ANNOTATION_RUNTIME,
    RESERVED_LABEL_KEYS,
    FieldError,
    Resource,
    Workspace,
)
from presets.catalog import Catalog, did_you_mean
from presets.expand import parse_max_model_len
from presets.fit import fit_report
from presets.layout import engine_need_gib, layout, sizing_context, usable_gib
from presets.mig import profile_problem, slice_as_instance_type
from presets.validate.net import dns_subdomain_problem

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
PARTITION_MODES = ("mig", "accelerator")


def _expression(expr: Any, path: str) -> list[FieldError]:
    if not isinstance(expr, Mapping):
        return [FieldError(path=path, type="Invalid", message="must be an object")]
    out: list[FieldError] = []
    if not isinstance(expr.get("key"), str) or not expr.get("key"):
        out.append(
            FieldError(path=f"{path}.key", type="Required", message="a label key is required")
        )
    operator = expr.get("operator")
    values = expr.get("values")
    if operator not in OPERATORS:
        message = f"unsupported operator {operator!r}: must be one of {', '.join(OPERATORS)}"
        out.append(FieldError(path=f"{path}.operator", type="NotSupported", message=message))
    if values is not None and (
        not isinstance(values, list) or not all(isinstance(v, str) for v in values)
    ):
        out.append(
            FieldError(path=f"{path}.values", type="Invalid", message="must be a list of strings")
        )
    elif operator in ("In", "NotIn") and not values:
        message = f"operator {operator} needs at least one value"
        out.append(FieldError(path=f"{path}.values", type="Required", message=message))
    elif operator in ("Exists", "DoesNotExist") and values:
        message = f"operator {operator} takes no values"
        out.append(FieldError(path=f"{path}.values", type="Forbidden", message=message))
    return out


def _selector(selector: dict[str, Any] | None) -> list[FieldError]:
    path = "resource.labelSelector"
    if selector is None:
        return [FieldError(path=path, type="Required", message="a labelSelector is required")]
    out: list[FieldError] = []
    labels = selector.get("matchLabels")
    expressions = selector.get("matchExpressions")
    if labels is not None and not (
        isinstance(labels, Mapping) and all(isinstance(v, str) for v in labels.values())
    ):
        out.append(
            FieldError(
                path=f"{path}.matchLabels", type="Invalid", message="must map label keys to strings"
            )
        )
    elif isinstance(labels, Mapping) and labels and set(labels) <= RESERVED_LABEL_KEYS:
        message = "matchLabels must contain at least one label that is not reserved by kaito"
        out.append(FieldError(path=f"{path}.matchLabels", type="Invalid", message=message))
    if expressions is not None and not isinstance(expressions, list):
        out.append(
            FieldError(path=f"{path}.matchExpressions", type="Invalid", message="must be a list")
        )
    elif isinstance(expressions, list):
        for i, expr in enumerate(expressions):
            out += _expression(expr, f"{path}.matchExpressions[{i}]")
    if not labels and not expressions:
        message = "matchLabels or matchExpressions must select the nodes"
        out.append(FieldError(path=path, type="Required", message=message))
    return out


def _partition(resource: Resource, tuning: bool) -> list[FieldError]:
    part = resource.partition
    path = "resource.partition"
    if part is None:
        return []
    if tuning:
        return [
            FieldError(
                path=path, type="Forbidden", message="GPU partitioning is not supported for tuning"
            )
        ]
    out: list[FieldError] = []
    if resource.instance_type:
        message = "GPU partitioning is only supported with bring-your-own nodes (no instanceType)"
        out.append(FieldError(path=path, type="Forbidden", message=message))
    mode, count = part.get("mode"), part.get("count")
    if mode not in PARTITION_MODES:
        message = f"unsupported partition mode {mode!r}: must be one of mig, accelerator"
        out.append(FieldError(path=f"{path}.mode", type="NotSupported", message=message))
    if mode == "accelerator" and (
        not isinstance(count, int) or isinstance(count, bool) or count < 1
    ):
        message = "accelerator partitioning needs a count of at least 1"
        out.append(FieldError(path=f"{path}.count", type="Required", message=message))
    if mode == "mig" and count is not None:
        message = "count is only valid for accelerator mode"
        out.append(FieldError(path=f"{path}.count", type="Forbidden", message=message))
    profile = part.get("profile")
    if mode == "mig":
        problem = profile_problem(profile)
        if problem:
            out.append(FieldError(path=f"{path}.profile", type="Invalid", message=problem))
    if mode == "accelerator" and profile:
        message = "profile is only valid for mig mode"
        out.append(FieldError(path=f"{path}.profile", type="Forbidden", message=message))
    return out


def check_mig_fit(ws: Workspace, catalog: Catalog) -> list[FieldError]:
    """A MIG Workspace's model must fit one slice of its profile (weights, KV cache for the
    sizing context, runtime overhead), unless the bypass annotation says otherwise."""
    resource, inference = ws.resource, ws.inference
    part = resource.partition if resource is not None else None
    if part is None or part.get("mode") != "mig" or inference is None or inference.preset is None:
        return []
    profile = part.get("profile")
    model = catalog.model(inference.preset.name or "")
    if model is None or profile_problem(profile) or ANNOTATION_BYPASS in ws.annotations:
        return []
    slice_sku = slice_as_instance_type(str(profile))
    mml = parse_max_model_len(ws.annotations.get(ANNOTATION_MAX_MODEL_LEN))
    lay = layout(model, slice_sku, max_model_len=mml, max_nodes=1)
    if lay.nodes == 1:
        return []
    tokens = sizing_context(model, mml)
    message = (
        f"{model.name} does not fit one {profile} MIG slice: it needs "
        f"{engine_need_gib(model, tokens, 1):.1f} GiB at {tokens} tokens of context, the slice "
        f"offers {usable_gib(slice_sku):.1f} GiB usable; choose a larger profile"
    )
    return [FieldError(path="resource.partition.profile", type="Invalid", message=message,
                       value=str(profile))]


def _instance_type(
    ws: Workspace, resource: Resource, catalog: Catalog, required: bool
) -> list[FieldError]:
    path = "resource.instanceType"
    sku = resource.instance_type
    chosen = str(ws.annotations.get(ANNOTATION_PROVISIONER) or "").strip().lower()
    byo = (
        bool(resource.preferred_nodes)
        or resource.partition is not None
        or not required
        or chosen == "byo"  # this Workspace's own nodes: the label selector is enough
    )
    if not sku:
        if byo:
            return []
        message = "instanceType is required unless preferredNodes name existing nodes"
        return [FieldError(path=path, type="Required", message=message)]
    if catalog.instance_type(sku) is not None or ANNOTATION_BYPASS in ws.annotations or byo:
        return []
    hint = did_you_mean(sku, catalog.instance_types)
    message = (
        f"unsupported instance type {sku!r}{hint} (set {ANNOTATION_BYPASS} to use an unlisted one)"
    )
    return [FieldError(path=path, type="NotSupported", message=message, value=sku)]


def check_resource(
    ws: Workspace, catalog: Catalog, require_instance_type: bool
) -> list[FieldError]:
    resource = ws.resource
    if resource is None:
        return [FieldError(path="resource", type="Required", message="resource is required")]
    out = _selector(resource.label_selector)
    if resource.count is not None and resource.count < 1:
        out.append(
            FieldError(
                path="resource.count",
                type="Invalid",
                message="must be at least 1",
                value=resource.count,
            )
        )
    tuning = ws.inference is None and ws.tuning is not None
    if tuning and resource.count is not None and resource.count > 1:
        message = "tuning runs on one node: count must be 1"
        out.append(
            FieldError(path="resource.count", type="Invalid", message=message, value=resource.count)
        )
    seen: set[str] = set()
    for i, node in enumerate(resource.preferred_nodes or ()):
        problem = dns_subdomain_problem(node)
        if problem:
            out.append(
                FieldError(
                    path=f"resource.preferredNodes[{i}]",
                    type="Invalid",
                    message=problem,
                    value=node,
                )
            )
        if node in seen:
            out.append(
                FieldError(
                    path=f"resource.preferredNodes[{i}]",
                    type="Duplicate",
                    message="duplicate node",
                    value=node,
                )
            )
        seen.add(node)
    return (
        out
        + _partition(resource, tuning)
        + _instance_type(ws, resource, catalog, require_instance_type)
    )


def check_fit(
    ws: Workspace, catalog: Catalog, max_nodes: int, *, max_model_len: int | None = None
) -> list[FieldError]:
    """The GPU-fit rule for inference presets the catalog knows on SKUs it knows, at the
    annotation's context or `max_model_len` (the user's inference ConfigMap) when given.
    The transformers runtime serves from one node (upstream refuses the same)."""
    resource, inference = ws.resource, ws.inference
    if resource is None or inference is None or inference.preset is None or ws.tuning is not None:
        return []
    model = catalog.model(inference.preset.name or "")
    sku = catalog.instance_type(resource.instance_type or "")
    if model is None or sku is None or ANNOTATION_BYPASS in ws.annotations:
        return []
    count = resource.count if resource.count is not None and resource.count >= 1 else None
    if count is not None and count > max_nodes:
        message = f"at most {max_nodes} nodes are allowed, got {count}"
        return [FieldError(path="resource.count", type="Invalid", message=message, value=count)]
    mml = max_model_len or parse_max_model_len(ws.annotations.get(ANNOTATION_MAX_MODEL_LEN))
    verdict = fit_report(
        model, sku, catalog=catalog, max_model_len=mml, count=count, max_nodes=max_nodes,
        with_suggestions=False,
    )
    runtime = ws.annotations.get(ANNOTATION_RUNTIME) or model.runtime
    if verdict.fits and runtime == "transformers" and verdict.nodes > 1:
        message = (
            f"{model.name} needs {verdict.nodes} nodes of {sku.name}; the transformers runtime "
            "serves from one node: use the vllm runtime or a larger instance type"
        )
        path = f"metadata.annotations[{ANNOTATION_RUNTIME}]"
        return [FieldError(path=path, type="Invalid", message=message, value=runtime)]
    if verdict.fits:
        return []
    report = fit_report(  # the refusal names the cheapest instance types that would fit
        model, sku, catalog=catalog, max_model_len=mml, count=count, max_nodes=max_nodes
    )
    path = "resource.count" if report.nodes and count is not None else "resource.instanceType"
    return [
        FieldError(path=path, type="Invalid", message=report.message, value=resource.instance_type)
    ]


def check_node_cap(ws: Workspace, max_nodes: int) -> list[FieldError]:
    """`resource.count` never exceeds `max_nodes`: for every Workspace, whatever its preset
    or SKU, and whatever its annotations (the bypass annotation skips fit, not this cap)."""
    count = ws.resource.count if ws.resource is not None else None
    if count is None or count <= max_nodes:
        return []
    message = f"at most {max_nodes} nodes are allowed, got {count}"
    return [FieldError(path="resource.count", type="Invalid", message=message, value=count)]
