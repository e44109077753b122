"""The admission webhook is killed while Workspaces run, and later started again.

Why: the webhook is registered as the manifests ship it: a CREATE fails closed, an UPDATE
fails open. What must hold (docs/security.md, "Deletion always completes"): while it is
down, creates are refused with the apiserver's clean error; passes over existing
Workspaces go on without failures (status is a subresource the webhook does not judge,
children are other kinds), so their drift is still repaired; a deletion completes (its
finalizer removal is an UPDATE); an update admitted unchecked is checked by the pass,
reported, and changes nothing that runs. Once the webhook is back on its port, new
Workspaces are admitted and converge and invalid updates are refused again.

It must not: register the webhook for any namespace but the test's own, or leave the
webhook process (or its workers) running.

Pods come from the simulated kubelet: deletion with the webhook down is about API calls.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from reconciler.kube import Kube
from rig.kubelet import SimKubelet, always
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.helpers import conditions, create_ws, get_ws, phi3, reconcile, unique, wait
from tests.support.webhook import Server, admitting, start_server, stop_server

pytestmark = pytest.mark.cluster
GROUP, VERSION, PLURAL = "kaito.sh", "v1beta1", "workspaces"
PRESET = phi3("x", "x")["inference"]["preset"]["name"]


@pytest.fixture
def node_label(api_client: client.ApiClient) -> Iterator[str]:
    """A simulated GPU node (room for four one-GPU Workspaces) whose pods turn ready."""
    name, label = unique("gpu"), unique("webhook-down")
    create_gpu_node(api_client, name, instance_type="Standard_NC6s_v3", gpus=4,
                    labels={"apps": label})
    kubelet = SimKubelet(api_client, nodes=[name], policy=always("ready")).start()
    yield label
    kubelet.stop()
    delete_node(api_client, name)


def _start(tmp_path: Path, log: str, port: int | None = None) -> Server:
    return start_server(tmp_path / "certs", tmp_path / log, "--threads", "4", port=port)


def _kill(server: Server) -> None:
    """SIGKILL the gunicorn workers, then the master (a crash, no graceful stop)."""
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    server.proc.kill()
    server.proc.wait(timeout=30)

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    wait(refused, 30, f"nothing listening on the webhook's port {server.port}")


def _ready(api: client.ApiClient, ns: str, name: str) -> bool:
    return conditions(get_ws(api, ns, name)).get("WorkspaceReady", {}).get("status") == "True"


def _names(kube: Kube, ns: str) -> list[str]:
    return sorted(w["metadata"]["name"] for w in kube.list_items(f"{GROUP}/{VERSION}",
                                                                   "Workspace", ns))


def _set_preset(custom: client.CustomObjectsApi, ns: str, name: str, preset: str) -> None:
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, {"inference": {"preset": {"name": preset}}})


def test_with_the_webhook_down_creates_are_refused_and_running_workspaces_are_kept(
    api_client: client.ApiClient, namespace: str, node_label: str, tmp_path: Path,
    workspace_crd: object,
) -> None:
    kube = Kube(api_client)
    custom = client.CustomObjectsApi(api_client)
    apps = client.AppsV1Api(api_client)
    server = _start(tmp_path, "webhook.log")
    try:
        with admitting(api_client, server, namespace, tag="down"):
            for name in ("keep", "remove"):
                create_ws(api_client, namespace, phi3(name, node_label))

            def converged(*names: str) -> bool:
                reconcile(kube, namespace)
                return all(_ready(api_client, namespace, n) for n in names)

            wait(lambda: converged("keep", "remove"), 120, "both Workspaces Ready", 0.5)

            _kill(server)
            # 1. a create is refused, cleanly, by the apiserver (failurePolicy Fail)
            with pytest.raises(ApiException) as refused:
                create_ws(api_client, namespace, phi3("new", node_label))
            assert refused.value.status == 500, refused.value.body
            assert "failed calling webhook" in str(refused.value.body), refused.value.body
            assert _names(kube, namespace) == ["keep", "remove"]

            # 2. existing Workspaces: drift is repaired, no failure, then nothing to do
            apps.delete_namespaced_deployment("keep", namespace)
            wait(lambda: not apps.list_namespaced_deployment(
                namespace, field_selector="metadata.name=keep").items, 60,
                 "the deleted Deployment to be gone")
            repaired = reconcile(kube, namespace)
            assert repaired.failed == 0, repaired.failures
            assert repaired.created >= 1, repaired.line()
            wait(lambda: converged("keep", "remove"), 120, "Ready again with the webhook down",
                 0.5)
            quiet = reconcile(kube, namespace)
            assert quiet.failed == 0, quiet.failures
            assert quiet.writes == 0, quiet.line()

            # 3. a deletion completes: the finalizer removal is an UPDATE, and UPDATEs fail
            #    open (manifests/base/webhook/webhookconfigurations.yaml)
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "remove")
            deleted = reconcile(kube, namespace)
            assert deleted.failed == 0, deleted.failures
            assert _names(kube, namespace) == ["keep"]
            assert _ready(api_client, namespace, "keep")

            # 4. an update admitted unchecked is checked by the pass: reported, and the
            #    running Deployment is left as it was
            def version() -> str:
                path = f"/apis/apps/v1/namespaces/{namespace}/deployments/keep"
                found = kube.request("GET", path)
                return str(found["metadata"]["resourceVersion"])

            before = version()
            _set_preset(custom, namespace, "keep", "no-such-model")
            invalid = reconcile(kube, namespace)
            assert invalid.failed == 1, invalid.failures
            assert "no-such-model" in invalid.failures[0], invalid.failures
            assert version() == before
            _set_preset(custom, namespace, "keep", PRESET)
            wait(lambda: converged("keep"), 120, "Ready again after the fix", 0.5)

            # 5. the webhook is back (same port, same certificates): creates are admitted,
            #    and an invalid update is refused again
            server = _start(tmp_path, "webhook-restarted.log", port=server.port)
            create_ws(api_client, namespace, phi3("new", node_label))
            wait(lambda: converged("keep", "new"), 120, "the new Workspace Ready", 0.5)
            with pytest.raises(ApiException) as denied:
                _set_preset(custom, namespace, "keep", "no-such-model")
            assert 400 <= denied.value.status < 500, denied.value.body
            assert get_ws(api_client, namespace, "keep")["inference"]["preset"]["name"] == PRESET
            last = reconcile(kube, namespace)
            assert last.failed == 0, last.failures
            assert last.writes == 0, last.line()
    finally:
        stop_server(server)
