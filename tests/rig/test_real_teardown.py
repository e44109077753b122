"""`down` leaves nothing behind once real nodes ran: the proof that `make down` is clean.

A control plane of its own (in tmp_path) starts a real node, runs a pod with volumes (so
the kubelet mounts tmpfs and the pod gets log dirs), then `hack/local-cluster.sh down`
(what `make cluster-down` runs; `make down` calls the same ControlPlane.down) must leave
no process, container, mount, cgroup, pod log dir, bridge, veth, network namespace,
iptables rule or changed sysctl that was not there before.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rig import hostnet
from rig.cluster import ControlPlane, ControlPlaneError
from rig.kapi import Kube
from rig.realnode import PAUSE_IMAGE, RealNodeError, RealNodes
from tests.support.probes import wait_for

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


def _links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


def _cgroups() -> set[str]:
    root = Path("/sys/fs/cgroup")
    return {f"{c.name}/{d.name}" for c in root.iterdir() if c.is_dir() and not c.is_symlink()
            for d in c.iterdir() if d.is_dir() and d.name.startswith(hostnet.NODE_PREFIX)}


def _netns() -> set[str]:
    ns = Path("/run/netns")
    return {p.name for p in ns.iterdir()} if ns.is_dir() else set()


def snapshot() -> dict[str, Any]:
    return {"links": _links(), "rules": hostnet.our_rules(), "sysctls": hostnet.read_sysctls(),
            **{d: set(os.listdir(d)) if Path(d).is_dir() else None
               for d in ("/var/log/pods", "/var/log/containers")},
            "cgroups": _cgroups(), "netns": _netns(),
            "owner": Path("/run/kaito-py").exists(),
            "node-dirs": Path("/var/lib/kaito-py").exists()}


def processes_mentioning(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in argv:
                found.append(f"{proc.name}: {argv[:200]}")
    return found


def mounts_under(marker: str) -> list[str]:
    return [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if marker in ln]


def test_down_removes_everything_real_nodes_added(tmp_path: Path) -> None:
    before = snapshot()
    state = tmp_path / "state"
    cp = ControlPlane(state)
    markers = [str(state)]
    try:
        try:
            cp.up()
            nodes = RealNodes(state)
            nodes.start("teardown-node", gpus=1)
            markers.append(str((nodes.record("teardown-node") or {})["dir"]))
        except (ControlPlaneError, RealNodeError) as exc:
            pytest.fail(f"could not start the control plane and a real node:\n{exc}",
                        pytrace=False)
        api = cp.api_client()
        kube = Kube(api)
        wait_for("the default ServiceAccount", lambda: kube.items(
            "/api/v1/namespaces/default/serviceaccounts"))
        kube.create("/api/v1/namespaces/default/pods", {
            "metadata": {"name": "held"}, "spec": {
                "containers": [{"name": "main", "image": PAUSE_IMAGE,
                                "imagePullPolicy": "Never",
                                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
                "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]}})
        # A container that cannot start and is retried: its log folder tends to outlive it.
        kube.create("/api/v1/namespaces/default/pods", {
            "metadata": {"name": "failing"}, "spec": {"containers": [
                {"name": "main", "image": PAUSE_IMAGE, "imagePullPolicy": "Never",
                 "command": ["/no-such-binary"]}]}})
        wait_for("the pod Running", lambda: kube.get("/api/v1/namespaces/default/pods/held")[
            "status"].get("phase") == "Running", timeout=60)
        wait_for("the failing pod's container to have failed", lambda: any(
            (cs.get("lastState") or {}).get("terminated") or (cs.get("state") or {}).get(
                "terminated") or (cs.get("state") or {}).get("waiting", {}).get("reason") in (
                "CrashLoopBackOff", "RunContainerError")
            for cs in kube.get("/api/v1/namespaces/default/pods/failing")["status"].get(
                "containerStatuses") or []), timeout=60)
        api.close()  # type: ignore[no-untyped-call]
        during = snapshot()
        # The test can fail: all of these really were added.
        assert during["links"] - before["links"], "no bridge was made"
        assert during["rules"], "no iptables rule was added"
        assert during["cgroups"] - before["cgroups"], "no cgroup was made"
        assert mounts_under(markers[1]), "the kubelet and dockerd mounted nothing"
        assert processes_mentioning(markers[1])
    finally:
        started = time.monotonic()
        down = subprocess.run(["bash", str(REPO / "hack" / "local-cluster.sh"), "down",
                               "--state-dir", str(state)], capture_output=True, text=True,
                              timeout=180)
        print(f"down took {time.monotonic() - started:.1f}s:\n{down.stdout}{down.stderr}")
    assert down.returncode == 0, down.stderr
    after = snapshot()
    for marker in markers:
        assert processes_mentioning(marker) == []
        assert mounts_under(marker) == []
    for key in before:
        assert after[key] == before[key], key
    assert not (state / "nodes").exists()
    assert not (state / "cluster.json").exists()
