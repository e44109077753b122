#!/usr/bin/env python3
"""Benchmark one reconcile pass against the rig's real control plane.

For each size (100 and 1000 Workspaces by default) it creates that many seed phi-3
Workspaces in a fresh namespace, with one labelled simulated GPU node as bring-your-own
capacity, then measures the first pass (everything created), runs passes until one
writes nothing, and measures five "waiting" passes (pods bound but Pending: the reconciler
reads pods to report progress). Then the rig's simulated kubelet makes every pod Ready,
passes run until the timelines are recorded and one writes nothing, and five "converged"
passes are measured: the steady state of a healthy cluster. Medians are printed; --profile
prints a cProfile (by own time) of the last pass of each kind to stderr. It prints a table
of duration, API calls and writes. Targets for the converged pass: 0 writes, a number of
calls that does not grow with the Workspaces (one LIST page holds 500), under 1 s for 1000.
It cleans up what it made (namespace, node, finalizers).

Usage: .venv/bin/python hack/bench-reconcile.py [--sizes 100 1000] [--state-dir .local/test]
       [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes import config

from presets.catalog import Catalog, load_catalog
from reconciler.kube import Kube, KubeError
from reconciler.provision.base import Provisioner
from reconciler.provision.factory import ProvisionSettings, provisioner_for
from reconciler.reconcile import Summary, run_pass
from reconciler.settings import Settings
from rig.cluster import ControlPlane
from rig.kubelet import SimKubelet, always
from rig.nodes import create_gpu_node, delete_node

REPO = Path(__file__).resolve().parent.parent
RUNS = 5  # converged passes measured; the median is printed
PROFILE = False  # --profile: cProfile of the last converged pass, to stderr

CRD = REPO / "crds" / "kaito.sh_workspaces.yaml"


def ensure_crd(kube: Kube) -> None:
    body = yaml.safe_load(CRD.read_text())
    try:
        kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=body)
        time.sleep(2)
    except KubeError as exc:
        if not exc.already_exists:
            raise


def workspace(i: int, label: str) -> dict[str, Any]:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": f"ws-{i:04d}"},
            "resource": {"instanceType": "Standard_NC6s_v3",
                         "labelSelector": {"matchLabels": {"apps": label}}},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}


def one_size(kube: Kube, n: int) -> list[tuple[str, Summary]]:
    tag = uuid.uuid4().hex[:6]
    ns, label, node = f"bench-{tag}", uuid.uuid4().hex[:8], f"bench-{n}-{tag}"
    kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    # room for every pod (GPUs, pod slots, and the CPU and memory each pod requests from its
    # SKU), so that pods are bound and stay Pending (no kubelet): a stable world
    create_gpu_node(kube.api, node, instance_type="Standard_NC6s_v3", gpus=n,
                    labels={"apps": label}, pods=str(n + 10), cpu=str(8 * (n + 10)),
                    memory=f"{128 * (n + 10)}Gi")
    settings = Settings(namespace=ns, provisioner="byo")
    byo = provisioner_for("byo", ProvisionSettings(provisioner="byo"))
    catalog = load_catalog()
    try:
        for i in range(n):
            kube.create(workspace(i, label) | {"metadata": {"name": f"ws-{i:04d}",
                                                            "namespace": ns}})
        rows = [("first", run_pass(kube, settings, catalog, lambda _n: byo))]
        wait_bound(kube, ns, n)  # the scheduler binds the pods; status follows in a pass
        settle(kube, settings, catalog, byo)
        rows.append((f"waiting (median of {RUNS})", measure(kube, settings, catalog, byo)))
        # the rig's simulated kubelet makes every pod Ready; the Deployments become available
        # and each Workspace records its timeline: the steady state of a healthy cluster
        with SimKubelet(kube.api, nodes={node}, policy=always("ready")):
            wait_ready(kube, ns, n)
            settle(kube, settings, catalog, byo)
        rows.append((f"converged (median of {RUNS})", measure(kube, settings, catalog, byo)))
        return rows
    finally:
        cleanup(kube, ns)
        delete_node(kube.api, node)


def settle(kube: Kube, settings: Settings, catalog: Catalog, byo: Provisioner) -> None:
    """Passes until one writes nothing (status catches up with the world)."""
    for _ in range(10):
        if run_pass(kube, settings, catalog, lambda _n: byo).writes == 0:
            return
    raise RuntimeError("ten passes in a row still wrote: the world does not settle")


def measure(kube: Kube, settings: Settings, catalog: Catalog, byo: Provisioner) -> Summary:
    """The median of RUNS passes (--profile: a cProfile of the last one, to stderr)."""
    passes = []
    for i in range(RUNS):
        profile = cProfile.Profile() if PROFILE and i == RUNS - 1 else None
        if profile is not None:
            profile.enable()
        passes.append(run_pass(kube, settings, catalog, lambda _n: byo))
        if profile is not None:
            profile.disable()
            pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(40)
    passes.sort(key=lambda s: s.duration_s)
    return passes[len(passes) // 2]


def wait_ready(kube: Kube, ns: str, n: int, timeout: float = 900.0) -> None:
    """Wait until all n Deployments report a ready replica (the simulated kubelet's work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployments = kube.list_items("apps/v1", "Deployment", ns)
        if sum(1 for d in deployments if (d.get("status") or {}).get("readyReplicas")) >= n:
            return
        time.sleep(3)
    raise TimeoutError(f"fewer than {n} Deployments were ready in {timeout:.0f} s")


def wait_bound(kube: Kube, ns: str, n: int, timeout: float = 600.0) -> None:
    """Wait until the real scheduler has bound all n pods (a stable world to converge on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = kube.list_items("v1", "Pod", ns)
        if sum(1 for p in pods if (p.get("spec") or {}).get("nodeName")) >= n:
            return
        time.sleep(2)
    raise TimeoutError(f"the scheduler bound fewer than {n} pods in {timeout:.0f} s")


def cleanup(kube: Kube, ns: str) -> None:
    for ws in kube.list_items("kaito.sh/v1beta1", "Workspace", ns):
        try:
            kube.merge_patch(ws, {"metadata": {"finalizers": None}})
        except KubeError as exc:
            if not exc.not_found:
                raise
    kube.request("DELETE", f"/api/v1/namespaces/{ns}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--state-dir", default=str(REPO / ".local" / "test"))
    p.add_argument("--profile", action="store_true", help="profile the last converged pass")
    args = p.parse_args(argv)
    global PROFILE
    PROFILE = args.profile
    cp = ControlPlane(Path(args.state_dir))
    cp.up()
    api = config.new_client_from_config(config_file=str(cp.kubeconfig))  # type: ignore[no-untyped-call]
    kube = Kube(api, timeout=120)
    ensure_crd(kube)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"machine: {os.cpu_count()} CPUs, load average {load}")
    print(f"{'workspaces':>10} {'pass':>10} {'seconds':>8} {'api calls':>9} {'writes':>7} "
          f"{'created':>7} {'status':>6} {'failed':>6}")
    for n in args.sizes:
        for what, s in one_size(kube, n):
            print(f"{n:>10} {what:>10} {s.duration_s:>8.2f} {s.calls:>9} {s.writes:>7} "
                  f"{s.created:>7} {s.status_writes:>6} {s.failed:>6}", flush=True)
            if s.failures:
                print(f"{'':>10} first failure: {s.failures[0][:150]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
