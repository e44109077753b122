"""From a stored Workspace object to what the pass needs: expanded, checked, resolved.

The reconciler expands again (an object that bypassed the webhook still works) and checks
it with the same pure rules as the webhook, so an impossible spec becomes a clear status
instead of a crash, parsing the stored object once (presets.expand.expand returns the typed
expansion with the JSON). Also builds the provisioner's NodeRequest. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from crds.workspace import Workspace
from presets.catalog import Catalog
from presets.expand import Resolved, expand, resolve, runs_on_cpu
from presets.fit import fit_report
from presets.validate import ValidationOptions, validate_workspace
from presets.validate.context import check_config_context, config_max_model_len
from reconciler.objects import ObjectsError, user_section
from reconciler.provision.base import NodeRequest, Obj
from reconciler.provision.byo import node_gpus


class SpecError(ValueError):
    """The Workspace cannot be run as written; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Prepared:
    """One Workspace of a pass, parsed once: the typed object and how to run it.

    `obj` is the expanded JSON, kept only for the API edge (status writes, offline render)."""

    obj: dict[str, Any]
    ws: Workspace
    resolved: Resolved
    config_context: int | None = None  # max-model-len from the user's inference ConfigMap
    node_problem: tuple[str, str] | None = None  # (reason, message): the model misfits the nodes


def _spec_only(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object minus metadata.managedFields and status: expansion and the builders read
    neither (the pass reads status from the stored object), and copying and parsing them on
    every pass was half the cost of preparing a stored Workspace."""
    out = {k: v for k, v in obj.items() if k != "status"}
    md = obj.get("metadata")
    if isinstance(md, Mapping) and "managedFields" in md:
        out["metadata"] = {k: v for k, v in md.items() if k != "managedFields"}
    return out


def prepare(
    obj: Mapping[str, Any],
    catalog: Catalog,
    *,
    user_config: Mapping[str, str] | None = None,
    options: ValidationOptions | None = None,
) -> Prepared:
    """Expand, validate and resolve, parsing the object ONCE; raises SpecError naming every
    problem found. Everything after this reads the typed `ws` and `resolved`.

    `user_config` is the data of the ConfigMap named by `inference.config`: a
    `max-model-len` in its runtime section is checked like the annotation and served."""
    obj = _spec_only(obj)
    try:
        expansion = expand(obj, catalog)
    except (ValueError, TypeError, KeyError) as exc:
        raise SpecError("InvalidSpec", f"cannot expand the Workspace: {exc}") from exc
    errors = validate_workspace(
        expansion.ws, catalog, parse_errors=expansion.errors, options=options
    )
    if errors:
        raise SpecError("InvalidSpec", "; ".join(str(e) for e in errors))
    try:
        resolved = resolve(expansion.ws, catalog)
    except (ValueError, KeyError, LookupError) as exc:
        raise SpecError("InvalidSpec", f"cannot resolve the Workspace: {exc}") from exc
    context = None
    if user_config and expansion.ws.inference is not None:
        context = _config_context(expansion.ws, catalog, resolved, user_config)
        if context is not None:
            resolved = resolve(expansion.ws, catalog, max_model_len=context)
    return Prepared(expansion.obj, expansion.ws, resolved, context)


def on_nodes(prep: Prepared, catalog: Catalog, nodes: Sequence[Obj]) -> Prepared:
    """`prep` laid out on the GPUs of the bring-your-own `nodes` chosen, when the Workspace
    names no instance type (nor a MIG slice): pods then request the GPUs those nodes have,
    and the context and parallelism fit them. Unchanged otherwise."""
    resolved = prep.resolved
    if resolved.instance_type is not None or resolved.layout or not nodes:
        return prep
    if prep.ws.inference is None or not resolved.preset:
        return prep
    gpus = node_gpus(nodes)
    if gpus is None:
        return prep
    if not gpus.gpu_memory_gib or resolved.model is None:  # no memory label: use every GPU
        whole = replace(resolved, gpus_per_node=gpus.gpu_count,
                        tensor_parallel_size=gpus.gpu_count)
        return replace(prep, resolved=whole)
    fitted = resolve(prep.ws, catalog, max_model_len=prep.config_context, node_gpus=gpus)
    report = fit_report(resolved.model, gpus, catalog=catalog, max_model_len=prep.config_context,
                        count=fitted.node_count, with_suggestions=False)
    problem = None if report.fits else ("InsufficientGPUMemory", report.message)
    return replace(prep, resolved=fitted, node_problem=problem)


def _config_context(
    ws: Workspace, catalog: Catalog, resolved: Resolved, user_config: Mapping[str, str]
) -> int | None:
    """The context the user's ConfigMap sets, once it passed the checks (None: not set)."""
    config = str(ws.inference.config if ws.inference is not None else "")
    try:
        section = user_section(resolved, user_config)
    except ObjectsError as exc:
        raise SpecError("InvalidConfig", str(exc)) from exc
    value, problem = config_max_model_len(section, config)
    if problem:
        raise SpecError("InvalidConfig", problem)
    if value is None:
        return None
    errors = check_config_context(ws, catalog, value, config=config)
    if errors:
        raise SpecError("InvalidConfig", "; ".join(e.message for e in errors))
    return value


def node_request(ws: Workspace, resolved: Resolved) -> NodeRequest:
    md = ws.metadata
    resource = ws.resource
    full = (resource.label_selector if resource else None) or {}
    selector = full.get("matchLabels") or {}
    expressions = [e for e in full.get("matchExpressions") or [] if isinstance(e, Mapping)]
    gpus = int(resolved.gpus_per_node or 0)
    it = resolved.instance_type
    if (not gpus and resolved.runtime == "vllm" and resolved.preset and ws.inference is not None
            and not runs_on_cpu(it)):
        gpus = 1  # bring-your-own nodes for a GPU runtime: at least one GPU each
    instance_type = it.name if it is not None else str(
        (resource.instance_type if resource else None) or "")
    required = 0.0
    if resolved.model is not None:
        required = float(resolved.model.weights_gib)
    return NodeRequest(
        namespace=md.namespace or "",
        name=md.name or "",
        uid=str(md.extra.get("uid", "")),
        instance_type=instance_type,
        count=int(resolved.node_count),
        label_selector={str(k): str(v) for k, v in selector.items()},
        preferred_nodes=tuple((resource.preferred_nodes if resource else None) or ()),
        gpus_per_node=gpus,
        gpu_resource=resolved.gpu_resource,
        match_expressions=tuple(expressions),
        gpu_memory_gib_per_gpu=float(it.gpu_memory_gib) if it is not None else None,
        required_gpu_memory_gib=required,
        storage_gib=int(resolved.storage_gib),
        annotations=dict(ws.annotations),
    )
