"""The real etcd and kube-apiserver crash in the middle of a reconcile pass, then restart.

Why: a reconciler outlives the API server it talks to (upgrades, a node reboot, an etcd
restore). The pass that is running when both die must end (its failures counted, no hang),
and the passes after the restart must converge every Workspace with exactly one NodeClaim
per node it needs and no duplicate or leaked NodeClaim, Node or workload.

The same crash under `--watch` (reconciler.watch) also cuts every watch stream: the loop
must reopen them and converge on its own.

The crash is placed, not timed: the pass pauses right after its first NodeClaim create has
been answered, the test SIGKILLs the apiserver and etcd, and the pass goes on against a
dead server; both are then started again on the same data dir, ports and certs.

It must not: touch the session's shared control plane (this test runs its own, in
tmp_path, stopped and removed at the end), or send traffic anywhere but that control plane.

Pods come from the simulated kubelet: a real node would not survive its control plane's
SIGKILL any better, and what is checked is the API state.
"""

from __future__ import annotations

import gc
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from reconciler.kube import Kube, KubeError
from reconciler.reconcile import Summary, run_pass
from reconciler.settings import Settings
from reconciler.watch import WATCHED, watch_loop
from rig import kapi
from rig.cluster import ControlPlane, ControlPlaneError
from rig.karpenter import SimKarpenter
from rig.kubelet import SimKubelet, always
from tests.reconciler.helpers import catalog, conditions, phi3, provisioners, unique, wait
from tests.support.cluster import NODECLAIM_CRD, WORKSPACE_CRD, install_crd

# A keep-alive TLS connection the SIGKILL cut is closed by the garbage collector, not by the
# client library, and under `-W error` its ResourceWarning would fail whichever test the
# collection lands in (seen once in two full runs). Only that warning is let through here;
# which pooled connection is left for the collector is an open question (closing note).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600),
              pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")]
NS = "restart"
# name -> nodes it needs (resource.count); one Workspace needs two
NEEDS = {"ws-a": 1, "ws-b": 1, "ws-c": 1, "ws-two": 2}
SKU = "Standard_NC24ads_A100_v4"  # one GPU per node: one NodeClaim per replica
CRASHED = ("kube-apiserver", "etcd")


@pytest.fixture(autouse=True)
def _collect_cut_connections() -> Iterator[None]:
    """Collect the connections the crash cut while this module's warning filter holds."""
    yield
    gc.collect()


class CrashPoint(Kube):
    """A Kube that pauses its caller right after the first NodeClaim create was answered,
    until `resume` is set, and records every failed request after that."""

    def __init__(self, api: ApiClient) -> None:
        super().__init__(api, timeout=10.0)
        self.created, self.resume = threading.Event(), threading.Event()
        self.failed_after: list[str] = []
        self.first_claim: dict[str, Any] = {}

    def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        try:
            out = super().request(method, path, query=query, body=body,
                                  content_type=content_type)
        except KubeError as exc:
            if self.resume.is_set():
                self.failed_after.append(f"{method} {path}: {exc.status} {exc.reason}")
            raise
        if method == "POST" and path.endswith("/nodeclaims") and not self.created.is_set():
            self.first_claim = out
            self.created.set()
            if not self.resume.wait(300):
                raise RuntimeError("the test never resumed the paused pass")
        return out


@pytest.fixture
def private_cp(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of this test's own (the crash must not hit other tests)."""
    cp = ControlPlane(tmp_path / "cp")
    try:
        try:
            cp.up()
        except ControlPlaneError as exc:
            pytest.fail(f"the test's own control plane did not start:\n{exc}", pytrace=False)
        api = cp.api_client()
        try:
            for crd in (NODECLAIM_CRD, WORKSPACE_CRD):
                install_crd(kapi.Kube(api), crd)
            rig = kapi.Kube(api)
            rig.create("/api/v1/namespaces", {"metadata": {"name": NS}})
            wait(lambda: _default_sa_ready(rig), 60,
                 "the namespace's default ServiceAccount with its token")
        finally:
            api.close()  # type: ignore[no-untyped-call]
        yield cp
    finally:
        cp.down()


def _default_sa_ready(rig: kapi.Kube) -> bool:
    """Pods are refused until the default ServiceAccount has its token (1.20)."""
    try:
        return bool(rig.get(f"/api/v1/namespaces/{NS}/serviceaccounts/default").get("secrets"))
    except kapi.KubeApiError as exc:
        if exc.status == 404:
            return False
        raise


def _settings() -> Settings:
    return Settings(provisioner="karpenter")  # whole cluster: the orphan sweep runs too


def _workspace(name: str, count: int) -> dict[str, Any]:
    body = phi3(name, unique("restart"), instance_type=SKU)
    body["metadata"]["namespace"] = NS
    body["resource"]["count"] = count
    return body


def _claims_by_workspace(claims: list[dict[str, Any]]) -> Counter[str]:
    return Counter(f"{c['metadata']['labels'].get('kaito.sh/workspacenamespace')}/"
                   f"{c['metadata']['labels'].get('kaito.sh/workspace')}" for c in claims)


def _children(kube: Kube) -> Counter[str]:
    counts: Counter[str] = Counter()
    for api, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap")):
        for obj in kube.list_items(api, kind, NS, "kaito.sh/workspace"):
            counts[f"{kind}/{obj['metadata']['labels']['kaito.sh/workspace']}"] += 1
    return counts


def _ready(kube: Kube, name: str) -> bool:
    ws = kube.request("GET", f"/apis/kaito.sh/v1beta1/namespaces/{NS}/workspaces/{name}")
    return conditions(ws).get("WorkspaceReady", {}).get("status") == "True"


def _create_workspaces(kube: Kube) -> None:
    for name, count in NEEDS.items():
        kube.request("POST", f"/apis/kaito.sh/v1beta1/namespaces/{NS}/workspaces",
                     body=_workspace(name, count))


def _crash_and_restart(cp: ControlPlane, crash: CrashPoint, runner: threading.Thread) -> None:
    """Once `runner`'s pass has created a NodeClaim: SIGKILL the apiserver and etcd, let the
    pass meet the dead server, then start both again on the same data, ports and certs."""
    try:
        assert crash.created.wait(120), "the pass created no NodeClaim"
        stopped = cp.stop_components(CRASHED, kill=True)
        assert len(stopped) == 2, stopped
    finally:
        crash.resume.set()
    wait(lambda: bool(crash.failed_after) or not runner.is_alive(), 120,
         "the interrupted pass to meet the dead apiserver")
    try:
        cp.start_components(("etcd", "kube-apiserver"), timeout=120)
    except ControlPlaneError as exc:
        pytest.fail(f"the control plane did not come back:\n{exc}", pytrace=False)


def _assert_clean(kube: Kube, crash: CrashPoint) -> None:
    """Exactly one NodeClaim (and Node) per node needed, the one made before the crash
    among them, one of each child per Workspace, and a last pass with nothing to do."""
    last = run_pass(kube, _settings(), catalog(), provisioners("karpenter"))
    claims = kube.list_items("karpenter.sh/v1", "NodeClaim")
    nodes = kube.list_items("v1", "Node")
    assert _claims_by_workspace(claims) == Counter(
        {f"{NS}/{name}": n for name, n in NEEDS.items()}), [c["metadata"] for c in claims]
    # etcd kept its data: the claim created just before the crash is one of those in use
    assert crash.first_claim["metadata"]["uid"] in {c["metadata"]["uid"] for c in claims}
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(
        str(c["status"]["nodeName"]) for c in claims)
    children = _children(kube)
    assert children == Counter({f"{kind}/{name}": 1 for name in NEEDS
                                for kind in ("Deployment", "Service", "ConfigMap")}), children
    assert last.failed == 0, (last.line(), last.failures)
    assert last.writes == 0, last.line()


def test_a_pass_survives_an_apiserver_and_etcd_crash_and_the_next_passes_converge(
    private_cp: ControlPlane,
) -> None:
    api = private_cp.api_client()
    kube = Kube(api, timeout=10.0)
    _create_workspaces(kube)
    crash = CrashPoint(api)
    outcome: list[Summary | BaseException] = []

    def interrupted_pass() -> None:
        try:
            outcome.append(run_pass(crash, _settings(), catalog(), provisioners("karpenter")))
        except BaseException as exc:  # reported by the test thread below
            outcome.append(exc)

    runner = threading.Thread(target=interrupted_pass, name="interrupted-pass", daemon=True)
    runner.start()
    _crash_and_restart(private_cp, crash, runner)
    runner.join(300)
    assert not runner.is_alive(), "the interrupted pass never ended"
    assert len(outcome) == 1, outcome
    interrupted = outcome[0]
    assert isinstance(interrupted, Summary), repr(interrupted)
    assert interrupted.failed >= 1, (interrupted.line(), crash.failed_after)
    assert crash.failed_after, interrupted.line()
    print(f"interrupted pass: {interrupted.line()}; failed requests after the crash: "
          f"{len(crash.failed_after)}, first: {crash.failed_after[0]}")

    karpenter = SimKarpenter(api)
    kubelet = SimKubelet(api, nodes=lambda _node: True, policy=always("ready")).start()
    passes: list[Summary] = []
    try:
        def converged() -> bool:
            passes.append(run_pass(kube, _settings(), catalog(), provisioners("karpenter")))
            karpenter.step()
            return all(_ready(kube, name) for name in NEEDS)

        wait(converged, 300, "every Workspace Ready after the restart", interval=1.0)
        _assert_clean(kube, crash)
    finally:
        kubelet.stop()
        api.close()  # type: ignore[no-untyped-call]
    print(f"passes after the restart until converged: {len(passes)}; "
          f"the first: {passes[0].line()}")
    assert not karpenter.errors, karpenter.errors


def test_watch_mode_rides_out_the_crash_its_watches_drop_and_come_back(
    private_cp: ControlPlane,
) -> None:
    """`--watch` through the same crash: its pass is interrupted, every watch stream is cut
    by the dying apiserver, and after the restart the loop alone (no pass run by the test)
    converges every Workspace."""
    api = private_cp.api_client()
    kube = Kube(api, timeout=10.0)
    _create_workspaces(kube)
    crash, stop = CrashPoint(api), threading.Event()
    returned: list[int | BaseException] = []

    def loop() -> None:
        try:
            returned.append(watch_loop(crash, _settings(), catalog(), provisioners("karpenter"),
                                       debounce=0.2, stop=stop))
        except BaseException as exc:  # reported by the test thread below
            returned.append(exc)

    runner = threading.Thread(target=loop, name="watch-loop", daemon=True)
    runner.start()
    karpenter = SimKarpenter(api)
    kubelet = SimKubelet(api, nodes=lambda _node: True, policy=always("ready")).start()
    try:
        # Every stream must be open before the crash for "opened again" to mean anything: on
        # two busy cores a watch thread was seen to open its first stream after the restart.
        wait(lambda: len({c.resource for c in crash.log.calls if c.verb == "watch"})
             == len(WATCHED), 120, "every watched kind's stream open before the crash")
        _crash_and_restart(private_cp, crash, runner)

        def converged() -> bool:  # Karpenter's part only: the passes are the loop's
            karpenter.step()
            return all(_ready(kube, name) for name in NEEDS)

        wait(converged, 300, "every Workspace Ready through watch mode", interval=0.5)
        # convergence may come before a stream that met the dead server is back (it retries
        # every 2 s): wait for every kind's second stream rather than assume it
        wait(lambda: all(n >= 2 for n in Counter(
            c.resource for c in crash.log.calls if c.verb == "watch").values()), 60,
            "every watched kind's stream opened again after the restart")
        stop.set()
        # an event wakes the loop so that it sees `stop` now, not at the next resync
        kube.merge_patch(kube.request("GET", f"/apis/kaito.sh/v1beta1/namespaces/{NS}/"
                                      "workspaces/ws-a"),
                         {"metadata": {"labels": {"kaito-py/test": "stop"}}})
        runner.join(120)
        assert not runner.is_alive(), "watch mode did not stop"
        assert returned == [0], returned
        _assert_clean(kube, crash)
    finally:
        stop.set()
        kubelet.stop()
        api.close()  # type: ignore[no-untyped-call]
    watches = Counter(c.resource for c in crash.log.calls if c.verb == "watch")
    # every watched kind's stream was opened again after the apiserver came back
    assert all(n >= 2 for n in watches.values()), watches
    assert len(watches) == len(WATCHED), watches
    assert not karpenter.errors, karpenter.errors
