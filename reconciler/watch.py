"""`kaito reconcile --watch`: the same pass, run when something relevant changes.

One thread per watched collection (Workspaces, the owned children and pods by label,
Nodes, NodeClaims) only sets a flag; the main loop waits for the flag (or a periodic
resync), lets a burst of events settle for `debounce` seconds, and runs one full pass.
So watch mode converges exactly as the CronJob does and never holds per-object state.
Metrics of each pass are served on /metrics when a port is given. It must not act on
an event's payload directly: events are only a hint that a pass is due.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from crds.workspace import LABEL_WORKSPACE
from presets.catalog import Catalog
from reconciler.kube import Kube, KubeError, resource_path
from reconciler.lease import Lease
from reconciler.reconcile import ProvisionerFor, Summary, run_pass
from reconciler.settings import Settings
from reconciler.world import NODECLAIM_API, WORKSPACE_API

log = logging.getLogger(__name__)
RESYNC_S = 60.0

WATCHED = (
    (WORKSPACE_API, "Workspace", ""), ("apps/v1", "Deployment", LABEL_WORKSPACE),
    ("apps/v1", "StatefulSet", LABEL_WORKSPACE), ("v1", "Service", LABEL_WORKSPACE),
    ("batch/v1", "Job", LABEL_WORKSPACE), ("v1", "Pod", LABEL_WORKSPACE),
    ("v1", "Node", ""), (NODECLAIM_API, "NodeClaim", ""),
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.passes = Counter("kaito_reconcile_passes", "Reconcile passes run",
                              registry=self.registry)
        self.writes = Counter("kaito_reconcile_objects_written", "Objects written, by operation",
                              ["op"], registry=self.registry)
        self.failed = Counter("kaito_reconcile_workspace_failures",
                              "Workspaces that failed in a pass", registry=self.registry)
        self.calls = Counter("kaito_reconcile_api_calls", "API calls made by passes",
                             registry=self.registry)
        self.duration = Gauge("kaito_reconcile_last_pass_seconds", "Duration of the last pass",
                              registry=self.registry)
        self.workspaces = Gauge("kaito_reconcile_workspaces", "Workspaces seen by the last pass",
                                registry=self.registry)

    def record(self, s: Summary) -> None:
        self.passes.inc()
        for op, n in (("create", s.created), ("update", s.updated), ("delete", s.deleted),
                      ("status", s.status_writes)):
            self.writes.labels(op).inc(n)
        self.failed.inc(s.failed)
        self.calls.inc(s.calls)
        self.duration.set(s.duration_s)
        self.workspaces.set(s.workspaces)


def _watch_one(kube: Kube, ns: str | None, api: str, kind: str, selector: str,
               due: threading.Event, stop: threading.Event) -> None:
    namespaced = kind not in ("Node", "NodeClaim")
    path = resource_path(api, kind, ns if namespaced else None)
    query = {"labelSelector": selector} if selector else {}
    while not stop.is_set():
        try:
            for _event in kube.stream(path, {**query, "timeoutSeconds": "300"}):
                due.set()
                if stop.is_set():
                    return
        except (KubeError, OSError, ValueError) as exc:
            log.info("watch of %s ended (%s); restarting", kind, exc)
            stop.wait(2.0)


def watch_loop(
    kube: Kube, settings: Settings, catalog: Catalog, provisioner_for: ProvisionerFor,
    *, debounce: float = 1.0, metrics_port: int = 0, max_passes: int | None = None,
    stop: threading.Event | None = None, lease: Lease | None = None,
) -> int:
    """Run passes until stopped (SIGTERM / SIGINT, `stop`, or `max_passes`); 0 on a clean stop.

    With a `lease`, every pass takes or renews it first (the CronJob's `--once` then finds it
    held and does nothing) and it is given back on the way out."""
    stop = stop or threading.Event()
    metrics = Metrics()
    if metrics_port:
        start_http_server(metrics_port, addr="0.0.0.0", registry=metrics.registry)  # noqa: S104
    due = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        stop.set()
        due.set()  # wake the loop now, not at the next resync

    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        return _loop(kube, settings, catalog, provisioner_for, metrics, stop, due, debounce,
                     max_passes, lease)
    finally:
        stop.set()
        if lease is not None:
            lease.release()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _loop(
    kube: Kube, settings: Settings, catalog: Catalog, provisioner_for: ProvisionerFor,
    metrics: Metrics, stop: threading.Event, due: threading.Event, debounce: float,
    max_passes: int | None, lease: Lease | None,
) -> int:
    due.set()
    for api, kind, selector in WATCHED:
        threading.Thread(target=_watch_one, name=f"watch-{kind}", daemon=True,
                         args=(kube, settings.namespace, api, kind, selector, due, stop)).start()
    passes = 0
    while not stop.is_set() and (max_passes is None or passes < max_passes):
        due.wait(RESYNC_S)
        if stop.is_set() or stop.wait(debounce):
            break
        due.clear()
        try:
            summary = run_pass(kube, settings, catalog, provisioner_for, lease=lease)
        except KubeError as exc:
            log.warning("pass failed to list: %s", exc)
            continue
        except Exception:  # a bug must not end watch mode: log it, the next pass retries
            log.exception("pass failed")
            continue
        passes += 1
        metrics.record(summary)
        log.warning("%s", summary.line())
    return 0

