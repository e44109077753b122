"""Steps 1-3 of `make demo`: control plane + CRDs + webhook, reconciler, simulated agents.

Why: these bring the system up and are idempotent: a running, healthy piece is reused, so
a second `make demo` costs seconds. Also holds `Ctx`, what every step shares. It must not
wait without a deadline or call any kubectl but the rig's.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from demo_agents import READY_FILE
from demo_common import REPO, DemoError, Steps, demo_dir
from demo_procs import Registry

CRDS = (
    REPO / "crds" / "kaito.sh_workspaces.yaml",
    REPO / "hack" / "rig" / "nodeclaims.karpenter.sh.yaml",
)


class Ctx:
    """What the steps share: paths, the rig's kubectl, a client, the process registry."""

    def __init__(self, state: Path, steps: Steps) -> None:
        from rig.cluster import ControlPlane

        self.state, self.steps = state, steps
        self.cp = ControlPlane(state)
        self.dir = demo_dir(state)
        self.registry = Registry(self.dir)
        self.kaito = str(Path(sys.executable).parent / "kaito")
        self.api: Any = None

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _https_ok(url: str, ca: Path) -> bool:
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:  # noqa: S310 (our https URL)
            return bool(resp.status == 200)
    except (OSError, ssl.SSLError):
        return False


def step_control_plane(ctx: Ctx) -> None:
    from kubernetes import config
    from rig.cluster import ControlPlaneError
    from rig.k8sbuild import BuildError, Progress

    ctx.steps.begin(
        "Local control plane (etcd, kube-apiserver, controller-manager, scheduler), CRDs, webhook"
    )
    was_up = ctx.cp.is_up()
    try:
        ctx.cp.up(progress=Progress(sys.stdout))
    except (ControlPlaneError, BuildError) as exc:
        raise DemoError(f"the control plane did not start:\n{exc}") from exc
    ctx.steps.say(
        ("reused the running" if was_up else "started the") + f" control plane at {ctx.cp.server}"
    )
    ctx.api = config.new_client_from_config(config_file=str(ctx.cp.kubeconfig))  # type: ignore[no-untyped-call]
    for crd in CRDS:
        ctx.kubectl("apply", "--validate=false", "-f", str(crd))
    ctx.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/workspaces.kaito.sh",
        "crd/nodeclaims.karpenter.sh",
    )
    ctx.steps.say("CRDs installed: workspaces.kaito.sh, nodeclaims.karpenter.sh")
    _webhook(ctx)
    ctx.steps.end()


def _webhook(ctx: Ctx) -> None:
    from rig.webhook import register_webhooks

    certs = ctx.dir / "webhook-certs"
    port_file = ctx.dir / "webhook.port"
    rec = ctx.registry.alive("webhook")
    if (
        rec
        and port_file.exists()
        and _https_ok(f"https://127.0.0.1:{port_file.read_text().strip()}/readyz", certs / "ca.crt")
    ):
        port = int(port_file.read_text())
        ctx.steps.say(f"reused the running webhook (pid {rec.pid}) on https://127.0.0.1:{port}")
    else:
        port = _free_port()
        ctx.dir.mkdir(parents=True, exist_ok=True)
        port_file.write_text(str(port))
        rec = ctx.registry.start(
            "webhook",
            [
                ctx.kaito,
                "webhook",
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--cert-dir",
                str(certs),
                "--ip",
                "127.0.0.1",
            ],
        )
        deadline = time.monotonic() + 60
        while not _https_ok(f"https://127.0.0.1:{port}/readyz", certs / "ca.crt"):
            if time.monotonic() > deadline or ctx.registry.alive("webhook") is None:
                raise DemoError(f"the webhook did not become ready on port {port}; see {rec.log}")
            time.sleep(0.2)
        ctx.steps.say(
            f"started `kaito webhook serve` (pid {rec.pid}) on https://127.0.0.1:{port} (TLS)"
        )
    register_webhooks(
        ctx.api, url=f"https://127.0.0.1:{port}", ca_bundle=(certs / "ca.crt").read_bytes()
    )
    ctx.steps.say(
        "registered it by URL with its caBundle (Mutating- and ValidatingWebhookConfiguration)"
    )


def step_reconciler(ctx: Ctx) -> None:
    ctx.steps.begin(
        "Reconciler: `kaito reconcile --watch` in the background, and one `--once` pass"
    )
    rec = ctx.registry.alive("reconciler")
    if rec:
        ctx.steps.say(f"reused the running reconciler (pid {rec.pid})")
    else:
        rec = ctx.registry.start(
            "reconciler",
            [
                ctx.kaito,
                "reconcile",
                "--watch",
                "--provisioner",
                "karpenter",
                "--kubeconfig",
                str(ctx.cp.kubeconfig),
            ],
        )
        time.sleep(1.0)
        if ctx.registry.alive("reconciler") is None:
            raise DemoError(f"`kaito reconcile --watch` exited at once; see {rec.log}")
        ctx.steps.say(f"started `kaito reconcile --watch` (pid {rec.pid}), log {rec.log}")
    once = subprocess.run(
        [
            ctx.kaito,
            "reconcile",
            "--once",
            "--provisioner",
            "karpenter",
            "--kubeconfig",
            str(ctx.cp.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    ctx.steps.say("$ kaito reconcile --once   (the CronJob's command: one complete pass)")
    for line in (once.stdout + once.stderr).strip().splitlines()[-3:]:
        ctx.steps.say(f"  {line}")
    if once.returncode != 0:
        raise DemoError(f"`kaito reconcile --once` failed (exit {once.returncode})")
    ctx.steps.end()


def step_agents(ctx: Ctx) -> None:
    ctx.steps.begin("Simulated Karpenter (no quota for Standard_NC6s_v3) and kubelet")
    ready = ctx.dir / READY_FILE
    rec = ctx.registry.alive("agents")
    if rec and ready.exists():
        ctx.steps.say(f"reused the running agents (pid {rec.pid})")
    else:
        ready.unlink(missing_ok=True)
        rec = ctx.registry.start(
            "agents",
            [
                sys.executable,
                str(REPO / "hack" / "demo.py"),
                "--state-dir",
                str(ctx.state),
                "agents",
            ],
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline or ctx.registry.alive("agents") is None:
                raise DemoError(f"the simulated Karpenter/kubelet did not start; see {rec.log}")
            time.sleep(0.2)
        ctx.steps.say(f"started them (pid {rec.pid}), log {rec.log}")
    if ready.read_text().strip() == "netns":
        ctx.steps.say(
            "pods run in one network namespace per simulated node (10.244.N.2), so their "
            "Service gets endpoints and the apiserver's service proxy reaches them"
        )
    else:
        ctx.steps.say(
            "NOT root: pod processes run on loopback (no network namespaces); the Service "
            "gets no endpoints, so the demo calls the model server directly"
        )
    ctx.steps.end()
