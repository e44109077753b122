"""Steps 1-4 of `make demo`: control plane, images, real nodes, the operator from manifests/.

Why: these bring the system up the way a user installs it: our images are built (rig.images)
and pushed to a local registry (which also serves pods, with basic auth, on the control
plane's bridge address: the tuning Job pushes its adapter there), a real node (kubelet +
its own dockerd) joins as the system pool, the simulated Karpenter answers NodeClaims with
more real nodes, and the operator is installed from manifests/ (the karpenter overlay, with
the image name pointing at the local registry, and the reconciler flags the local registry
needs) and runs as real pods. Every step is idempotent: a running,
healthy piece is reused, so a second `make demo` costs seconds. Also holds `Ctx`, what
every step shares.

It must not: wait without a deadline, call any kubectl but the rig's, or fall back to a
simulated kubelet: when a real part cannot start, the demo stops with the reason.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demo_agents import AGENTS_CONFIG, READY_FILE, write_preload
from demo_common import REPO, DemoError, Steps, demo_dir
from demo_procs import Registry

if TYPE_CHECKING:
    from rig.imageregistry import Published

NODECLAIM_CRD = REPO / "hack" / "rig" / "nodeclaims.karpenter.sh.yaml"
SYSTEM_NODE = "kaito-system-1"
# The images the demo runs: the operator (webhook, bootstrap, reconciler), the CPU
# model server and the tuning Job's image.
DEMO_IMAGES = ("operator", "cpu-runtime", "tuning-runtime")
# The install's settings for the rig's registry (plain HTTP on a private, rig-made address)
# and a per-pod weights cache (a hostPath would have to be made writable for uid 65532).
RECONCILER_ARGS = ("--weights-plain-http", "--adapters-plain-http", "--weights-cache=emptyDir",
                   "--allow-private-registries")


class Ctx:
    """What the steps share: paths, the rig's kubectl, a client, the process registry."""

    def __init__(self, state: Path, steps: Steps) -> None:
        from rig.cluster import ControlPlane

        self.state, self.steps = state, steps
        self.cp = ControlPlane(state)
        self.dir = demo_dir(state)
        self.registry = Registry(self.dir)
        self.api: Any = None
        self.registry_host = ""
        self.pod_registry_host = ""  # the registry's pod side (rig.imageregistry)
        self.passes = 0

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.cp.kubectl), "--kubeconfig", str(self.cp.kubeconfig), *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, input=input
        )
        if check and done.returncode != 0:
            raise DemoError(
                f"kubectl {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr}"
            )
        return done

    def show(self, *args: str) -> str:
        """Run kubectl, print the command and its output indented; return stdout."""
        done = self.kubectl(*args)
        self.steps.say(f"$ kubectl {' '.join(args)}")
        for line in done.stdout.rstrip().splitlines():
            self.steps.say(f"  {line}")
        return done.stdout

    def reconcile(self) -> str:
        """One reconcile pass now: a Job from the reconciler CronJob (it also runs each minute)."""
        from rig.operator import OperatorError, reconcile_pass

        self.passes += 1
        name = f"kaito-reconciler-demo-{int(time.time())}-{self.passes}"
        try:
            log = reconcile_pass(self.kubectl, name)
        except OperatorError as exc:
            raise DemoError(f"the reconcile pass {name} failed:\n{exc}") from exc
        lines = [ln for ln in log.strip().splitlines() if "pass:" in ln]
        return lines[-1] if lines else log.strip()[-300:]


def step_control_plane(ctx: Ctx) -> None:
    from kubernetes import config

    from rig.cluster import ControlPlaneError
    from rig.k8sbuild import BuildError, Progress

    ctx.steps.begin("Local control plane (etcd, kube-apiserver, controller-manager, scheduler)")
    was_up = ctx.cp.is_up()
    try:
        ctx.cp.up(progress=Progress(sys.stdout))
    except (ControlPlaneError, BuildError) as exc:
        raise DemoError(f"the control plane did not start:\n{exc}") from exc
    ctx.steps.say(
        ("reused the running" if was_up else "started the") + f" control plane at {ctx.cp.server}"
    )
    if ctx.cp.address == "127.0.0.1":
        raise DemoError("the control plane listens on 127.0.0.1 only: real nodes need root "
                        "(the rig's bridge address for the apiserver); run `make demo` as root")
    ctx.api = config.new_client_from_config(config_file=str(ctx.cp.kubeconfig))  # type: ignore[no-untyped-call]
    ctx.kubectl("apply", "--validate=false", "-f", str(NODECLAIM_CRD))
    ctx.steps.say("the cloud's CRD for the simulated Karpenter: nodeclaims.karpenter.sh")
    ctx.steps.end()


def step_images(ctx: Ctx) -> None:
    from rig.imageregistry import ImageRegistry, RegistryError

    ctx.steps.begin("Images from images/ (rig.images), pushed to a local registry")
    registry = ImageRegistry(ctx.state)
    try:
        ctx.registry_host = registry.start()
        ctx.steps.say(f"local registry (Debian's docker-registry) on {ctx.registry_host}")
        published = build_and_publish(ctx, DEMO_IMAGES)
        ctx.pod_registry_host = registry.start_pod_side(ctx.cp.address)
        ctx.steps.say(f"the same registry for pods on {ctx.pod_registry_host} (the control "
                      "plane's bridge address; basic auth, plain HTTP): adapters go there")
    except RegistryError as exc:
        raise DemoError(str(exc)) from exc
    write_preload(ctx.dir / AGENTS_CONFIG,
                  [(p.local, p.name) for p in published if "runtime" in p.name])
    ctx.steps.end()


def build_and_publish(ctx: Ctx, folders: tuple[str, ...]) -> list[Published]:
    """Build the images of `folders` (reusing unchanged ones) and push them to the demo's
    registry (which must be running); rig.imageregistry.Published of each."""
    from rig.imageregistry import ImageRegistry, publish
    from rig.images import build, dockerd

    def say(message: str) -> None:
        ctx.steps.say(f"[{ctx.steps.elapsed():5.0f} s] {message}")

    try:
        engine = dockerd.ensure()
    except RuntimeError as exc:
        raise DemoError(f"no Docker engine to build the images:\n{exc}") from exc
    ctx.steps.say(f"image-build engine {engine.host}{' (ours)' if engine.ours else ''}")
    known = {i.folder: i for i in build.IMAGES}
    names = []
    for folder in folders:
        say(f"{folder}: checking its inputs (a cold build takes minutes)")
        try:
            done = build.build(engine, known[folder], say)
        except (RuntimeError, OSError, ValueError) as exc:
            raise DemoError(f"building {folder} failed:\n{exc}") from exc
        verb = "reused (inputs unchanged)" if done.reused else f"built in {done.seconds:.0f} s"
        say(f"{done.tag}: {verb}, {done.size_mb:.0f} MB")
        names.append(done.tag)
    return publish(engine, ImageRegistry(ctx.state), names, say)


def step_nodes(ctx: Ctx) -> None:
    from rig.realnode import RealNodeError, RealNodes

    ctx.steps.begin("Real nodes: a system node, and the simulated Karpenter starting more")
    nodes = RealNodes(ctx.state)
    if SYSTEM_NODE in nodes.names():
        ctx.steps.say(f"reused the running node {SYSTEM_NODE}")
    else:
        try:
            t = nodes.start(SYSTEM_NODE, labels={"kubernetes.azure.com/mode": "system"})
        except RealNodeError as exc:
            raise DemoError(f"the system node did not start:\n{exc}") from exc
        ctx.steps.say(f"{SYSTEM_NODE}: its own dockerd ({t.dockerd:.1f} s) and a real kubelet "
                      f"1.20 (Ready at {t.ready:.1f} s)")
    rec = nodes.record(SYSTEM_NODE) or {}
    ctx.steps.say(f"node IP {rec.get('ip')} on bridge {rec.get('bridge')}; pods get "
                  f"{rec.get('subnet')}; kube-proxy (iptables) and cluster DNS run beside it")
    _agents(ctx)
    ctx.steps.end()


def _agents(ctx: Ctx) -> None:
    ready = ctx.dir / READY_FILE
    rec = ctx.registry.alive("agents")
    if rec and ready.exists():
        ctx.steps.say(f"reused the running simulated Karpenter (pid {rec.pid})")
        return
    ready.unlink(missing_ok=True)
    rec = ctx.registry.start(
        "agents",
        [sys.executable, str(REPO / "hack" / "demo.py"), "--state-dir", str(ctx.state), "agents"],
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if time.monotonic() > deadline or ctx.registry.alive("agents") is None:
            raise DemoError(f"the simulated Karpenter did not start; see {rec.log}")
        time.sleep(0.2)
    ctx.steps.say(f"simulated Karpenter (pid {rec.pid}, log {rec.log}): a NodeClaim becomes a "
                  "real node with the claim's labels, taints and the SKU's nvidia.com/gpu; "
                  "no quota for Standard_NC6s_v3")


def step_operator(ctx: Ctx) -> None:
    from rig import operator
    from rig.images import build

    ctx.steps.begin("The operator from manifests/: kubectl apply, then wait for its pods")
    overlay = operator.write_overlay(ctx.dir / "overlay", ctx.registry_host, build.version(),
                                     RECONCILER_ARGS)
    ctx.steps.say(f"local overlay {overlay}/kustomization.yaml: the karpenter overlay with")
    ctx.steps.say(f"  images: ghcr.io/kaito-py/kaito -> {ctx.registry_host}/kaito-py/kaito")
    ctx.steps.say(f"  reconciler flags: {' '.join(RECONCILER_ARGS)}")
    try:
        docs = operator.render(ctx.kubectl, overlay)
        ctx.steps.say("$ kubectl kustomize | kubectl apply -f -   (= `kubectl apply -k` on "
                      "1.21+; the 1.20 rig gets CronJob/PDB as v1beta1)")
        out = operator.apply(ctx.kubectl, docs, ctx.dir / "overlay")
        for line in out.strip().splitlines():
            ctx.steps.say(f"  {line}")
        operator.wait_installed(
            ctx.kubectl, timeout=300,
            say=lambda m: ctx.steps.say(f"[{ctx.steps.elapsed():5.0f} s] {m}"))
    except operator.OperatorError as exc:
        raise DemoError(str(exc)) from exc
    ctx.show("get", "pods", "-n", operator.NAMESPACE, "-o", "wide")
    ctx.steps.say("$ kubectl create job --from=cronjob/kaito-reconciler ...   (one pass now "
                  "instead of waiting for the minute)")
    ctx.steps.say(f"  {ctx.reconcile()}")
    ctx.steps.end()
