"""One reconciler at a time (a Lease), LIST pagination, and ConfigMaps read only where a
Workspace names one (issue L, item 8). Each test fails on the reconciler before issue L:
there was no Lease, LISTs were one unbounded request, and a Workspace naming a ConfigMap
made the pass LIST every ConfigMap in scope.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from reconciler.kube import Kube
from reconciler.lease import Lease
from reconciler.provision.base import NodeRequest, NodeStatus, Provisioner, Snapshot, Writer
from reconciler.reconcile import run_pass
from reconciler.settings import Settings
from tests.reconciler.helpers import catalog, create_ws, get_ws, phi3, provisioners, reconcile

pytestmark = pytest.mark.cluster


class Clock:
    def __init__(self) -> None:
        self.wall = datetime.now(UTC)
        self.mono = 0.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


def _lease(kube: Kube, namespace: str, who: str, clock: Clock) -> Lease:
    return Lease(kube, namespace, identity=who, duration_s=30, clock=clock.now,
                 monotonic=clock.monotonic)


def test_only_one_holder_at_a_time_and_an_expired_lease_is_taken_over(
    api_client: client.ApiClient, namespace: str,
) -> None:
    kube, clock = Kube(api_client), Clock()
    watch, cron = _lease(kube, namespace, "watch", clock), _lease(kube, namespace, "cron", clock)
    assert watch.acquire()
    assert not cron.acquire()
    assert cron.holder == "watch"
    clock.advance(31)  # watch stopped renewing
    assert cron.acquire()
    assert not watch.keep()  # watch finds it lost
    cron.release()
    assert watch.acquire()  # released: no need to wait for expiry


def test_a_pass_that_cannot_take_the_lease_writes_nothing(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    kube, clock = Kube(api_client), Clock()
    create_ws(api_client, namespace, phi3("ws", "nowhere"))
    holder = _lease(kube, namespace, "watch", clock)
    assert holder.acquire()
    summary = run_pass(kube, Settings(namespace=namespace, provisioner="byo"), catalog(),
                       provisioners("byo"), lease=_lease(kube, namespace, "cron", clock))
    assert "held by watch" in summary.skipped
    assert summary.workspaces == 0
    assert summary.writes == 0
    assert "finalizers" not in get_ws(api_client, namespace, "ws")["metadata"]


class Thief:
    """BYO, except that on the first Workspace another reconciler takes the Lease."""

    def __init__(self, inner: Provisioner, steal: Callable[[], None]) -> None:
        self.name, self.inner, self.steal = inner.name, inner, steal

    def ensure(self, req: NodeRequest, snap: Snapshot, writer: Writer) -> NodeStatus:
        self.steal()
        return self.inner.ensure(req, snap, writer)

    def release(self, namespace: str, name: str, snap: Snapshot, writer: Writer) -> bool:
        return self.inner.release(namespace, name, snap, writer)

    def sweep(self, live: set[tuple[str, str]], snap: Snapshot, writer: Writer) -> list[str]:
        raise AssertionError("a pass that lost its lease must not sweep")


def test_a_pass_that_loses_the_lease_stops_before_the_next_workspace(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    kube, clock = Kube(api_client), Clock()
    create_ws(api_client, namespace, phi3("a-first", "nowhere"))
    create_ws(api_client, namespace, phi3("b-second", "nowhere"))
    ours, other = _lease(kube, namespace, "cron", clock), _lease(kube, namespace, "watch", clock)

    def steal() -> None:
        clock.advance(31)  # we stalled past our own lease...
        assert other.acquire()  # ...and the other reconciler took it

    inner = provisioners("byo")
    summary = run_pass(kube, Settings(provisioner="byo", namespace=namespace), catalog(),
                       lambda name: Thief(inner(name), steal), lease=ours)
    assert "lost lease" in summary.skipped
    assert summary.workspaces == 1
    assert "finalizers" not in get_ws(api_client, namespace, "b-second")["metadata"]


def test_lists_are_paged(api_client: client.ApiClient, namespace: str) -> None:
    kube = Kube(api_client)
    for i in range(5):
        kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"cm-{i}", "namespace": namespace,
                                  "labels": {"paged": "yes"}}})
    mark = kube.log.mark()
    items = kube.list_items("v1", "ConfigMap", namespace, "paged=yes", limit=2)
    assert sorted(i["metadata"]["name"] for i in items) == [f"cm-{i}" for i in range(5)]
    assert [c.verb for c in kube.log.since(mark)] == ["list", "list", "list"]


def test_only_the_configmap_a_workspace_names_is_read(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    kube = Kube(api_client)
    for name in ("named", "someone-elses"):
        kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": name, "namespace": namespace},
                     "data": {"inference_config.yaml": "vllm: {}\n"}})
    ws: dict[str, Any] = phi3("ws", "nowhere")
    ws["inference"]["config"] = "named"
    create_ws(api_client, namespace, ws)
    mark = kube.log.mark()
    reconcile(kube, namespace)
    configmap_reads = [(c.verb, c.path) for c in kube.log.since(mark)
                       if c.resource == "configmaps" and c.verb in ("get", "list")]
    assert ("get", f"/api/v1/namespaces/{namespace}/configmaps/named") in configmap_reads
    gets = [path for verb, path in configmap_reads if verb == "get"]
    assert gets == [f"/api/v1/namespaces/{namespace}/configmaps/named"]
