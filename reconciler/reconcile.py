"""One level-based reconcile pass over every Workspace in scope.

List once (reconciler.world), then per Workspace: finalizer, expand and check, ensure its
nodes through the provisioner, desired objects, plan, write only the difference, status
(only when it changed) and an Event per transition; on deletion release the nodes and
drop the finalizer. A failure in one Workspace becomes its status and an Event, and the
pass goes on. The summary counts objects written and API calls. This module makes the
decisions about order only; what objects look like lives in reconciler.objects, what
status says in reconciler.status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from crds.workspace import FINALIZER, FINALIZERS_RELEASED, provisioner_of
from presets.catalog import Catalog
from presets.validate import ValidationOptions
from presets.validate.preset import is_hf_id
from reconciler.apply import apply_children, finalizer_add, finalizer_remove, write_status
from reconciler.expansion import Prepared, SpecError, node_request, on_nodes, prepare
from reconciler.hfsizing import SizingError, catalog_for
from reconciler.kube import Kube, KubeError
from reconciler.lease import Lease
from reconciler.objects import ObjectsError, desired_objects
from reconciler.podstate import download_progress, fetching_container
from reconciler.provision.base import NodeStatus, Provisioner, Snapshot
from reconciler.servingsecrets import serving_secrets
from reconciler.settings import Settings
from reconciler.startup import startup_complete, startup_input
from reconciler.status import Observed, tuning_finished, workload_ready
from reconciler.world import ChildError, DryWriter, Key, PassWriter, World, list_world

Obj = dict[str, Any]
log = logging.getLogger(__name__)
ProvisionerFor = Callable[[str], Provisioner]


@dataclass(slots=True)
class Summary:
    workspaces: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    status_writes: int = 0
    events: int = 0
    failed: int = 0
    calls: int = 0
    writes: int = 0
    duration_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    skipped: str = ""  # why the pass did nothing or stopped early (the Lease)
    plan: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"pass: workspaces={self.workspaces} created={self.created} "
                f"updated={self.updated} deleted={self.deleted} status={self.status_writes} "
                f"events={self.events} failed={self.failed} api_calls={self.calls} "
                f"writes={self.writes} duration={self.duration_s:.3f}s"
                + (f" skipped: {self.skipped}" if self.skipped else ""))


@dataclass(slots=True)
class Pass:
    kube: Kube
    settings: Settings
    catalog: Catalog
    provisioner_for: ProvisionerFor
    world: World
    writer: PassWriter
    snap: Snapshot
    now: str
    summary: Summary
    nodes_used: dict[str, int] = field(default_factory=dict)  # namespace -> nodes admitted


def describe(exc: BaseException) -> str:
    """One line for status and logs: the message, with the type when it is not ours."""
    if isinstance(exc, KubeError | SpecError | ObjectsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_pass(
    kube: Kube, settings: Settings, catalog: Catalog, provisioner_for: ProvisionerFor,
    *, now: datetime | None = None, lease: Lease | None = None,
) -> Summary:
    """Reconcile every Workspace in scope once; never raises for one Workspace's failure.

    With a `lease`, the pass runs only while it holds it: taken (or renewed) first, kept
    between Workspaces; a pass that cannot take it does nothing (`summary.skipped` says who
    holds it) and one that loses it stops before the next Workspace, without the sweep.
    """
    started, mark = time.monotonic(), kube.log.mark()
    moment = now or datetime.now(UTC)
    summary = Summary()
    if lease is not None and not lease.acquire():
        summary.skipped = f"lease {lease.namespace}/{lease.name} is held by {lease.holder}"
        return _tally(summary, kube, mark, None, started)
    world = list_world(kube, settings.namespace)
    stamp = rfc3339(moment)
    writer = DryWriter(kube, stamp, summary.plan) if settings.dry_run else PassWriter(kube, stamp)
    snap = Snapshot(nodes=world.nodes, nodeclaims=world.nodeclaims, now=moment)
    ctx = Pass(kube, settings, catalog, provisioner_for, world, writer, snap, stamp, summary)
    for obj in sorted(world.workspaces, key=_age):  # the oldest first: caps admit by age
        if lease is not None and not lease.keep():
            summary.skipped = (f"lost lease {lease.namespace}/{lease.name} to {lease.holder}; "
                               "stopped before the next Workspace")
            break
        summary.workspaces += 1
        reconcile_workspace(ctx, obj)
    else:
        _sweep(ctx)
    return _tally(summary, kube, mark, writer, started)


def _tally(summary: Summary, kube: Kube, mark: int, writer: PassWriter | None,
           started: float) -> Summary:
    """Counts for the summary; the Lease's own calls are bookkeeping, not the pass's work."""
    calls = [c for c in kube.log.since(mark) if c.verb != "watch" and c.resource != "leases"]
    summary.calls = len(calls)
    summary.writes = sum(1 for c in calls if c.verb in ("create", "update", "patch", "delete"))
    if writer is not None:
        summary.created, summary.updated = writer.tally.created, writer.tally.updated
        summary.deleted, summary.events = writer.tally.deleted, writer.tally.events
    summary.duration_s = time.monotonic() - started
    return summary


def _age(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    md = obj.get("metadata") or {}
    return (str(md.get("creationTimestamp") or ""), str(md.get("namespace") or ""),
            str(md.get("name") or ""))


def node_cap_refusal(settings: Settings, nodes_used: dict[str, int], namespace: str,
                     count: int) -> str:
    """Why `count` more nodes are refused under the install's caps ("" when admitted, and
    then counted in `nodes_used`)."""
    cap = settings.max_nodes_per_workspace
    if cap is not None and count > cap:
        return f"needs {count} nodes; this installation allows at most {cap} per Workspace"
    ns_cap = settings.max_nodes_per_namespace
    used = nodes_used.get(namespace, 0)
    if ns_cap is not None and used + count > ns_cap:
        return (f"needs {count} nodes; namespace {namespace} may use at most {ns_cap} and "
                f"older Workspaces there already use {used}")
    nodes_used[namespace] = used + count
    return ""


def _provisioner_name(ctx: Pass, annotations: Mapping[str, str] | None) -> str:
    """The validated choice (crds.workspace.provisioner_of); ValueError for an unknown one."""
    return provisioner_of(annotations, ctx.settings.provisioner)


def _stored_annotations(obj: Mapping[str, Any]) -> Mapping[str, str] | None:
    """The annotations of a stored object that is not parsed (deletion, the sweep)."""
    annotations = (obj.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, Mapping) else None


def _chosen_names(ctx: Pass) -> set[str]:
    """Every provisioner some Workspace uses (an invalid choice fails in its own Workspace)."""
    names = {ctx.settings.provisioner}
    for obj in ctx.world.workspaces:
        try:
            names.add(_provisioner_name(ctx, _stored_annotations(obj)))
        except ValueError:
            continue
    return names


def _sweep(ctx: Pass) -> None:
    """Orphan sweep: only with the whole cluster in view (a namespace scope sees too little)."""
    if ctx.settings.namespace is not None:
        return
    live = {(str(w["metadata"].get("namespace")), str(w["metadata"]["name"]))
            for w in ctx.world.workspaces}
    for name in sorted(_chosen_names(ctx)):
        try:
            removed = ctx.provisioner_for(name).sweep(live, ctx.snap, ctx.writer)
        except Exception as exc:  # one provisioner's failure never stops the pass
            log.warning("sweep (%s) failed", name, exc_info=not isinstance(exc, KubeError))
            ctx.summary.failures.append(f"sweep ({name}): {describe(exc)}")
            ctx.summary.failed += 1
            continue
        for item in removed:
            log.info("sweep (%s) removed %s", name, item)


def reconcile_workspace(ctx: Pass, obj: Obj) -> None:
    md = obj["metadata"]
    key: Key = (str(md.get("namespace")), str(md["name"]))
    try:
        if md.get("deletionTimestamp"):
            _finish_deletion(ctx, obj, key)
            return
        if FINALIZER not in (md.get("finalizers") or []) and not ctx.settings.dry_run:
            obj = finalizer_add(ctx.kube, obj)
        _converge(ctx, obj, key)
    except Exception as exc:  # anything: this Workspace's status, never the pass's end
        ctx.summary.failed += 1
        ctx.summary.failures.append(f"{key[0]}/{key[1]}: {describe(exc)}")
        log.warning("workspace %s/%s failed: %s", key[0], key[1], describe(exc),
                    exc_info=not isinstance(exc, KubeError))
        _record_failure(ctx, obj, "ReconcileError", describe(exc))


def _finish_deletion(ctx: Pass, obj: Obj, key: Key) -> None:
    if not set(FINALIZERS_RELEASED) & set(obj["metadata"].get("finalizers") or []):
        return
    name = _provisioner_name(ctx, _stored_annotations(obj))
    released = ctx.provisioner_for(name).release(key[0], key[1], ctx.snap, ctx.writer)
    if released and not ctx.settings.dry_run:
        finalizer_remove(ctx.kube, obj)  # counted among the pass's API writes


def _record_failure(ctx: Pass, obj: Obj, reason: str, message: str) -> None:
    observed = Observed(generation=int(obj["metadata"].get("generation") or 0),
                        tuning=bool(obj.get("tuning")), error=(reason, message),
                        previous=tuple((obj.get("status") or {}).get("conditions") or ()))
    try:
        _status(ctx, obj, observed)
    except Exception as exc:  # the failure is already counted; the status is best effort
        log.warning("status of %s not written: %s", obj["metadata"]["name"], describe(exc))


def _user_config(ctx: Pass, obj: Obj) -> Mapping[str, str] | None:
    """The data of the ConfigMap the stored object names in inference.config, if listed."""
    inference = obj.get("inference")
    name = inference.get("config") if isinstance(inference, Mapping) else None
    if not isinstance(name, str) or not name:
        return None
    cm = ctx.world.configmaps.get((str(obj["metadata"].get("namespace")), name))
    data = (cm or {}).get("data")
    return data if isinstance(data, Mapping) else None


def _catalog_for(ctx: Pass, obj: Obj) -> Catalog:
    """The catalog, plus the model sized from its own files when the inference preset is an
    `org/name` id the catalog lacks (reconciler.hfsizing: fetched once per process)."""
    name = str(((obj.get("inference") or {}).get("preset") or {}).get("name") or "")
    if not is_hf_id(name) or ctx.catalog.model(name) is not None:
        return ctx.catalog
    try:
        return catalog_for(ctx.catalog, name, endpoint=ctx.settings.hf_endpoint)
    except SizingError as exc:
        raise SpecError("ModelNotSized", f"cannot size {name}: {exc}") from exc


def _converge(ctx: Pass, obj: Obj, key: Key) -> None:
    gen = int(obj["metadata"].get("generation") or 0)
    previous = tuple((obj.get("status") or {}).get("conditions") or ())
    try:
        options = ValidationOptions.for_provisioner(ctx.settings.provisioner)
        prep = prepare(obj, _catalog_for(ctx, obj), user_config=_user_config(ctx, obj),
                       options=options)
        chosen = _provisioner_name(ctx, prep.ws.annotations)
    except ValueError as exc:  # SpecError, or a provisioner annotation no provisioner answers
        spec = exc if isinstance(exc, SpecError) else SpecError("InvalidSpec", str(exc))
        ctx.summary.failed += 1
        ctx.summary.failures.append(f"{key[0]}/{key[1]}: {spec.message}")
        _status(ctx, obj, Observed(generation=gen, tuning=bool(obj.get("tuning")),
                                   error=(spec.reason, spec.message), previous=previous))
        return
    refused = node_cap_refusal(ctx.settings, ctx.nodes_used, key[0],
                               int(prep.resolved.node_count))
    if refused:
        ctx.summary.failed += 1
        ctx.summary.failures.append(f"{key[0]}/{key[1]}: {refused}")
        _status(ctx, obj, Observed(generation=gen, tuning=prep.ws.tuning is not None,
                                   error=("NodeCapExceeded", refused), previous=previous))
        return
    req = node_request(prep.ws, prep.resolved)
    nodes = ctx.provisioner_for(chosen).ensure(req, ctx.snap, ctx.writer)
    if nodes.nodes:  # bring-your-own nodes without an instance type: size pods to them
        chosen_nodes = [n for n in ctx.snap.nodes
                        if (n.get("metadata") or {}).get("name") in set(nodes.nodes)]
        prep = on_nodes(prep, _catalog_for(ctx, obj), chosen_nodes)
    children = ctx.world.children.get(key, [])
    workload, error = _workload(ctx, prep, nodes, children, previous)
    tuning = prep.ws.tuning is not None
    pods: list[Obj] = []
    live = workload is None or not _settled(workload, tuning) or (
        not tuning and not startup_complete(obj))  # the pass that saw it ready records it
    progress = None
    if live:
        pods = ctx.world.pods(key) if children or workload else []
        progress = fetch_progress(ctx.world, pods)
    startup = startup_input(obj, nodes.nodes, ctx.world.nodes, ctx.world.nodeclaims, live=live)
    _status(ctx, obj, Observed(generation=gen, tuning=tuning, error=error, nodes=nodes,
                               workload=workload, pods=pods,
                               target_nodes=int(prep.resolved.node_count), previous=previous,
                               serving=_serving(prep), startup=startup,
                               progress=progress))
    if error:
        ctx.summary.failed += 1
        ctx.summary.failures.append(f"{key[0]}/{key[1]}: {error[1]}")


def fetch_progress(world: World, pods: list[Obj]) -> str | None:
    """How far the first pod that is fetching weights got, from its container's log (one
    log GET per starting Workspace per pass, none once its pods are ready)."""
    for pod in pods:
        container = fetching_container(pod)
        if container is None:
            continue
        md = pod.get("metadata") or {}
        text = world.log_tail(str(md.get("namespace")), str(md.get("name")), container)
        said = download_progress(text or "")
        return f"pod {md.get('name')}: {said}" if said else None
    return None


def _serving(prep: Prepared) -> tuple[int, str] | None:
    """(context, layout) an inference preset is served with, for status."""
    resolved = prep.resolved
    if prep.ws.inference is None or not resolved.preset or not resolved.max_model_len:
        return None
    return int(resolved.max_model_len), resolved.layout


def _workload(
    ctx: Pass, prep: Prepared, nodes: NodeStatus, children: list[Obj], previous: tuple[Obj, ...],
) -> tuple[Obj | None, tuple[str, str] | None]:
    """Apply the children when the nodes are ready; return the live workload (or None)."""
    kinds = ("Deployment", "StatefulSet", "Job")
    live = next((c for c in children if c["kind"] in kinds), None)
    if not nodes.ready:
        return live, None  # keep what runs; never tear a workload down for a flapping node
    if prep.node_problem:  # bring-your-own nodes whose GPUs cannot hold the model
        return live, prep.node_problem
    ns = prep.ws.metadata.namespace or ""
    config_name = prep.ws.inference.config if prep.ws.inference is not None else None
    user_cm = ctx.world.configmaps.get((ns, str(config_name))) if config_name else None
    settings = {"ttl_seconds_after_finished": ctx.settings.tuning_ttl_seconds,
                "backoff_limit": ctx.settings.tuning_backoff_limit,
                "active_deadline_seconds": ctx.settings.tuning_active_deadline_seconds,
                "weights_cache": ctx.settings.weights_cache,
                "hf_endpoint": ctx.settings.hf_endpoint,
                "weights_plain_http": ctx.settings.weights_plain_http,
                "adapters_plain_http": ctx.settings.adapters_plain_http,
                "allow_private_registries": ctx.settings.allow_private_registries}
    try:
        desired = desired_objects(prep.ws, prep.resolved, nodes.nodes,
                                  user_config=(user_cm or {}).get("data") or {},
                                  settings=settings)
    except (ObjectsError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # the user's ConfigMap holds values of any type: a builder that trips on one is
        # this Workspace's configuration problem, not the pass's
        return live, ("InvalidConfig", describe(exc))
    if config_name and user_cm is None:
        unread = ctx.world.configmap_errors.get((ns, str(config_name)))
        if unread:
            return live, ("ConfigUnreadable", f"ConfigMap {ns}/{config_name}: {unread}")
        return live, ("ConfigNotFound", f"ConfigMap {ns}/{config_name} named by inference.config "
                                        "does not exist")
    if live is None and tuning_finished(previous):
        desired = [d for d in desired if d["kind"] != "Job"]  # finished and removed by its TTL
    try:
        missing = serving_secrets(ctx.world, ctx.writer, prep.ws, desired)  # API key, Ray token
        if missing:
            return live, missing
        written = apply_children(ctx.writer, desired, children)
    except ChildError as exc:
        return live, (exc.reason, exc.message)
    return next((w for w in written if w["kind"] in kinds), live), None


def _settled(workload: Mapping[str, Any], tuning: bool) -> bool:
    if tuning:
        conds = (workload.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conds)
    return workload_ready(workload)[0]


def _status(ctx: Pass, obj: Obj, observed: Observed) -> None:
    if write_status(ctx.kube, ctx.writer, obj, observed, ctx.now, dry=ctx.settings.dry_run):
        ctx.summary.status_writes += 1
