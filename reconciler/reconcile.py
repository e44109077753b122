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

from crds.workspace import ANNOTATION_PROVISIONER, FINALIZER
from presets.catalog import Catalog
from reconciler.apply import apply_children, finalizer_add, finalizer_remove, write_status
from reconciler.expansion import Prepared, SpecError, node_request, prepare
from reconciler.kube import Kube, KubeError
from reconciler.objects import ObjectsError, desired_objects
from reconciler.provision.base import NodeStatus, Provisioner, Snapshot
from reconciler.settings import Settings
from reconciler.status import Observed, tuning_finished, workload_ready
from reconciler.world import DryWriter, Key, PassWriter, World, list_world

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
    plan: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"pass: workspaces={self.workspaces} created={self.created} "
                f"updated={self.updated} deleted={self.deleted} status={self.status_writes} "
                f"events={self.events} failed={self.failed} api_calls={self.calls} "
                f"writes={self.writes} duration={self.duration_s:.3f}s")


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


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_pass(
    kube: Kube, settings: Settings, catalog: Catalog, provisioner_for: ProvisionerFor,
    *, now: datetime | None = None,
) -> Summary:
    """Reconcile every Workspace in scope once; never raises for one Workspace's failure."""
    started, mark = time.monotonic(), kube.log.mark()
    moment = now or datetime.now(UTC)
    summary = Summary()
    world = list_world(kube, settings.namespace)
    stamp = rfc3339(moment)
    writer = DryWriter(kube, stamp, summary.plan) if settings.dry_run else PassWriter(kube, stamp)
    snap = Snapshot(nodes=world.nodes, nodeclaims=world.nodeclaims, now=moment)
    ctx = Pass(kube, settings, catalog, provisioner_for, world, writer, snap, stamp, summary)
    for obj in world.workspaces:
        summary.workspaces += 1
        reconcile_workspace(ctx, obj)
    _sweep(ctx)
    calls = [c for c in kube.log.since(mark) if c.verb != "watch"]
    summary.calls = len(calls)
    summary.writes = sum(1 for c in calls if c.verb in ("create", "update", "patch", "delete"))
    summary.created, summary.updated = writer.tally.created, writer.tally.updated
    summary.deleted, summary.events = writer.tally.deleted, writer.tally.events
    summary.duration_s = time.monotonic() - started
    return summary


def _provisioner_name(ctx: Pass, obj: Mapping[str, Any]) -> str:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_PROVISIONER) or ctx.settings.provisioner)


def _sweep(ctx: Pass) -> None:
    """Orphan sweep: only with the whole cluster in view (a namespace scope sees too little)."""
    if ctx.settings.namespace is not None:
        return
    live = {(str(w["metadata"].get("namespace")), str(w["metadata"]["name"]))
            for w in ctx.world.workspaces}
    names = {ctx.settings.provisioner} | {_provisioner_name(ctx, w) for w in ctx.world.workspaces}
    for name in sorted(names):
        try:
            removed = ctx.provisioner_for(name).sweep(live, ctx.snap, ctx.writer)
        except (KubeError, ValueError, OSError) as exc:
            ctx.summary.failures.append(f"sweep ({name}): {exc}")
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
    except (KubeError, ValueError, OSError) as exc:
        ctx.summary.failed += 1
        ctx.summary.failures.append(f"{key[0]}/{key[1]}: {exc}")
        log.warning("workspace %s/%s failed: %s", key[0], key[1], exc)
        _record_failure(ctx, obj, "ReconcileError", str(exc))


def _finish_deletion(ctx: Pass, obj: Obj, key: Key) -> None:
    if FINALIZER not in (obj["metadata"].get("finalizers") or []):
        return
    released = ctx.provisioner_for(_provisioner_name(ctx, obj)).release(
        key[0], key[1], ctx.snap, ctx.writer)
    if released and not ctx.settings.dry_run:
        finalizer_remove(ctx.kube, obj)
        ctx.summary.updated += 0  # the finalizer patch is counted among API writes


def _record_failure(ctx: Pass, obj: Obj, reason: str, message: str) -> None:
    observed = Observed(generation=int(obj["metadata"].get("generation") or 0),
                        tuning=bool(obj.get("tuning")), error=(reason, message),
                        previous=tuple((obj.get("status") or {}).get("conditions") or ()))
    try:
        _status(ctx, obj, observed)
    except KubeError as exc:
        log.warning("status of %s not written: %s", obj["metadata"]["name"], exc)


def _converge(ctx: Pass, obj: Obj, key: Key) -> None:
    gen = int(obj["metadata"].get("generation") or 0)
    previous = tuple((obj.get("status") or {}).get("conditions") or ())
    try:
        prep = prepare(obj, ctx.catalog)
    except SpecError as exc:
        ctx.summary.failed += 1
        ctx.summary.failures.append(f"{key[0]}/{key[1]}: {exc.message}")
        _status(ctx, obj, Observed(generation=gen, tuning=bool(obj.get("tuning")),
                                   error=(exc.reason, exc.message), previous=previous))
        return
    req = node_request(prep.obj, prep.resolved)
    nodes = ctx.provisioner_for(_provisioner_name(ctx, obj)).ensure(req, ctx.snap, ctx.writer)
    children = ctx.world.children.get(key, [])
    workload, error = _workload(ctx, prep, nodes, children, previous)
    tuning = bool(prep.obj.get("tuning"))
    pods: list[Obj] = []
    if workload is None or not _settled(workload, tuning):
        pods = ctx.world.pods(key) if children or workload else []
    _status(ctx, obj, Observed(generation=gen, tuning=tuning, error=error, nodes=nodes,
                               workload=workload, pods=pods,
                               target_nodes=int(prep.resolved.node_count), previous=previous))
    if error:
        ctx.summary.failed += 1
        ctx.summary.failures.append(f"{key[0]}/{key[1]}: {error[1]}")


def _workload(
    ctx: Pass, prep: Prepared, nodes: NodeStatus, children: list[Obj], previous: tuple[Obj, ...],
) -> tuple[Obj | None, tuple[str, str] | None]:
    """Apply the children when the nodes are ready; return the live workload (or None)."""
    kinds = ("Deployment", "StatefulSet", "Job")
    live = next((c for c in children if c["kind"] in kinds), None)
    if not nodes.ready:
        return live, None  # keep what runs; never tear a workload down for a flapping node
    ns = prep.obj["metadata"]["namespace"]
    config_name = (prep.obj.get("inference") or {}).get("config")
    user_cm = ctx.world.configmaps.get((ns, str(config_name))) if config_name else None
    settings = {"ttl_seconds_after_finished": ctx.settings.tuning_ttl_seconds,
                "backoff_limit": ctx.settings.tuning_backoff_limit}
    try:
        desired = desired_objects(prep.ws, prep.resolved, nodes.nodes,
                                  user_config=(user_cm or {}).get("data") or {},
                                  settings=settings)
    except (ObjectsError, ValueError) as exc:
        return live, ("InvalidConfig", str(exc))
    if config_name and user_cm is None:
        return live, ("ConfigNotFound", f"ConfigMap {ns}/{config_name} named by inference.config "
                                        "does not exist")
    if live is None and tuning_finished(previous):
        desired = [d for d in desired if d["kind"] != "Job"]  # finished and removed by its TTL
    written = apply_children(ctx.writer, desired, children)
    return next((w for w in written if w["kind"] in kinds), live), None


def _settled(workload: Mapping[str, Any], tuning: bool) -> bool:
    if tuning:
        conds = (workload.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conds)
    return workload_ready(workload)[0]


def _status(ctx: Pass, obj: Obj, observed: Observed) -> None:
    if write_status(ctx.kube, ctx.writer, obj, observed, ctx.now, dry=ctx.settings.dry_run):
        ctx.summary.status_writes += 1
