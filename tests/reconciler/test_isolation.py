"""One Workspace never stops the pass, the orphan sweep or --watch (issue L, item 1).

Each test makes one Workspace fail with an exception the pass did not expect (a
provisioner error of a type nobody listed, an Azure SDK error while deleting) and checks
that the other Workspace still converges, that the failing one gets its status and a
Warning Event, and that the pass (and the watch loop) finish. On the reconciler before
issue L each of these raised out of `run_pass`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from reconciler.kube import Kube
from reconciler.provision.aks_arm import ArmError
from reconciler.provision.base import NodeRequest, NodeStatus, Provisioner, Snapshot, Writer
from reconciler.reconcile import run_pass
from reconciler.settings import Settings
from reconciler.watch import watch_loop
from tests.reconciler.helpers import catalog, conditions, create_ws, get_ws, phi3, provisioners

pytestmark = pytest.mark.cluster


class Exploding:
    """The BYO provisioner, except that one Workspace's ensure/release raises `error`."""

    def __init__(self, inner: Provisioner, victim: str, error: Exception) -> None:
        self.name, self.inner, self.victim, self.error = inner.name, inner, victim, error

    def ensure(self, req: NodeRequest, snap: Snapshot, writer: Writer) -> NodeStatus:
        if req.name == self.victim:
            raise self.error
        return self.inner.ensure(req, snap, writer)

    def release(self, namespace: str, name: str, snap: Snapshot, writer: Writer) -> bool:
        if name == self.victim:
            raise self.error
        return self.inner.release(namespace, name, snap, writer)

    def sweep(self, live: set[tuple[str, str]], snap: Snapshot, writer: Writer) -> list[str]:
        return self.inner.sweep(live, snap, writer)


def _exploding(victim: str, error: Exception) -> Callable[[str], Provisioner]:
    inner = provisioners("byo")
    return lambda name: Exploding(inner(name), victim, error)


def _events(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return [e for e in kube.list_items("v1", "Event", namespace)
            if e["involvedObject"].get("name") == name]


@pytest.mark.parametrize("error", [
    pytest.param(RuntimeError("boom"), id="runtime-error"),
    pytest.param(TypeError("unsupported operand"), id="type-error"),
    pytest.param(ArmError(500, "InternalServerError", "Azure fell over"), id="azure-sdk-error"),
])
def test_an_unexpected_error_in_one_workspace_becomes_its_status_and_the_pass_goes_on(
    api_client: client.ApiClient, namespace: str, workspace_crd: object, error: Exception,
) -> None:
    kube = Kube(api_client)
    create_ws(api_client, namespace, phi3("bad", "nowhere"))
    create_ws(api_client, namespace, phi3("good", "nowhere"))
    settings = Settings(namespace=namespace, provisioner="byo")
    summary = run_pass(kube, settings, catalog(), _exploding("bad", error))
    assert summary.workspaces == 2
    assert summary.failed >= 1
    bad = conditions(get_ws(api_client, namespace, "bad"))
    assert bad["ResourceReady"]["status"] == "False"
    assert bad["ResourceReady"]["reason"] == "ReconcileError"
    assert type(error).__name__ in bad["ResourceReady"]["message"]
    assert any(e["type"] == "Warning" and e["reason"] == "ReconcileError"
               for e in _events(kube, namespace, "bad"))
    good = get_ws(api_client, namespace, "good")
    assert "workspace.kaito.sh/cleanup" in good["metadata"]["finalizers"]
    assert conditions(good)["ResourceReady"]["reason"] != "ReconcileError"


def test_an_azure_error_while_deleting_one_workspace_does_not_stop_the_others(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    kube = Kube(api_client)
    create_ws(api_client, namespace, phi3("bad", "nowhere"))
    create_ws(api_client, namespace, phi3("good", "nowhere"))
    settings = Settings(namespace=namespace, provisioner="byo")
    run_pass(kube, settings, catalog(), provisioners("byo"))  # both get the finalizer
    custom = client.CustomObjectsApi(api_client)
    for name in ("bad", "good"):
        custom.delete_namespaced_custom_object("kaito.sh", "v1beta1", namespace, "workspaces",
                                               name)
    error = ArmError(403, "AuthorizationFailed", "no delete on agentPools")
    summary = run_pass(kube, settings, catalog(), _exploding("bad", error))
    assert summary.failed == 1
    names = [w["metadata"]["name"] for w in kube.list_items("kaito.sh/v1beta1", "Workspace",
                                                             namespace)]
    assert names == ["bad"], "the good Workspace's deletion must complete in the same pass"
    assert any(e["reason"] == "ReconcileError" for e in _events(kube, namespace, "bad"))


def test_watch_mode_survives_a_workspace_that_raises(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    kube = Kube(api_client)
    create_ws(api_client, namespace, phi3("bad", "nowhere"))
    settings = Settings(namespace=namespace, provisioner="byo")
    result: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=lambda: result.append(watch_loop(
        kube, settings, catalog(), _exploding("bad", RuntimeError("boom")), debounce=0.0,
        max_passes=2, stop=stop)))
    thread.start()
    thread.join(120)
    stop.set()
    assert result == [0], "the watch loop must run its passes and stop cleanly"
