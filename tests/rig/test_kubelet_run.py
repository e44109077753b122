"""The simulated kubelet running a pod's entry point as a real local process."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient

from rig.kapi import Kube
from rig.kubelet import SimKubelet, always
from rig.nodes import create_gpu_node, delete_node
from tests.support.cluster import Kubectl
from tests.support.probes import alive, netns_left, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def node(api_client: ApiClient) -> Iterator[str]:
    name = f"run-{uuid.uuid4().hex[:8]}"
    create_gpu_node(api_client, name, instance_type="Standard_D4s_v3", gpus=0)
    yield name
    delete_node(api_client, name)


def _pod(node: str, command: list[str], probe_port: int | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "server", "image": "local", "command": command,
                                 "env": [{"name": "GREETING", "value": "hi"}]}
    if probe_port:
        container["ports"] = [{"name": "http", "containerPort": probe_port}]
        container["readinessProbe"] = {"httpGet": {"path": "/", "port": "http"}}
    return {"metadata": {"name": "server", "labels": {"app": "server"}},
            "spec": {"nodeName": node, "containers": [container]}}


def test_a_run_pod_serves_through_its_service_and_is_cleaned_up(
        api_client: ApiClient, namespace: str, node: str, kubectl: Kubectl) -> None:
    kube, pods = Kube(api_client), f"/api/v1/namespaces/{namespace}/pods"
    kube.create(f"/api/v1/namespaces/{namespace}/services", {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    kubelet = SimKubelet(api_client, [node], policy=always("run")).start()
    try:
        kube.create(pods, _pod(
            node, ["python", "-m", "http.server", "8080", "--bind", "0.0.0.0"], 8080))  # noqa: S104 (inside the node's own netns)
        def ready() -> dict[str, Any] | None:
            p = kube.get(f"{pods}/server")
            conds = p.get("status", {}).get("conditions") or []
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            return p if ok else None

        pod = wait_for("the pod to turn Ready", ready)
        pids = list(kubelet.processes().values())
        netns = kubelet.network_namespaces()
        if os.geteuid() == 0:
            assert pod["status"]["podIP"].startswith("10.244.")
            endpoints = f"/api/v1/namespaces/{namespace}/endpoints/web"
            ips = wait_for("the Service's endpoints", lambda: [
                a["ip"] for s in kube.get(endpoints).get("subsets") or []
                for a in s.get("addresses") or []])
            assert ips == [pod["status"]["podIP"]]
            listing = kubectl("get", "--raw",
                              f"/api/v1/namespaces/{namespace}/services/web:80/proxy/").stdout
            assert "Directory listing" in listing
            assert len(netns) == 1
    finally:
        kubelet.stop()
    assert pids
    assert not any(alive(pid) for pid in pids)
    assert netns_left(netns) == []


def test_a_run_pod_that_exits_reports_its_last_stderr_line(
        api_client: ApiClient, namespace: str, node: str) -> None:
    kube, pods = Kube(api_client), f"/api/v1/namespaces/{namespace}/pods"
    script = ("import os, sys; print('loading', file=sys.stderr); "
              "sys.stderr.write('fatal: ' + os.environ['GREETING'] + ' weights missing\\n'); "
              "sys.exit(3)")
    with SimKubelet(api_client, [node], policy=always("run")):
        kube.create(pods, _pod(node, ["python3", "-c", script]))

        def waiting() -> dict[str, Any] | None:
            statuses = kube.get(f"{pods}/server").get("status", {}).get("containerStatuses")
            return statuses[0] if statuses and "waiting" in statuses[0]["state"] else None

        cs = wait_for("CrashLoopBackOff", waiting)
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["lastState"]["terminated"]["message"] == "fatal: hi weights missing"
