"""The eight steps of `make demo up`, each idempotent: what already runs and answers is kept.

Why: hack/demo.py is the command line; this module is the walk-through itself. Each step
checks before it starts anything (a running, healthy webhook is reused; an applied
Workspace is re-applied, which the webhook keeps `unchanged`), so a second `make demo`
costs seconds.

It must not: wait without a deadline, print a step without its number and time, or call
any kubectl but the rig's.
"""

from __future__ import annotations

import json
import os
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
from demo_show import show_usage, wait_for_condition, workspace_conditions

NAMESPACE = "default"
SMOLLM = REPO / "examples" / "smollm2-135m-instruct.yaml"
PHI3 = REPO / "examples" / "kaito_workspace_phi_3.yaml"
TOO_SMALL = REPO / "examples" / "llama-3.3-70b-too-small.yaml"
CRDS = (
    REPO / "crds" / "kaito.sh_workspaces.yaml",
    REPO / "hack" / "rig" / "nodeclaims.karpenter.sh.yaml",
)
QUESTION = "What is the capital of France?"


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


def step_apply_smollm(ctx: Ctx) -> None:
    ctx.steps.begin(f"Apply the terse Workspace {SMOLLM.relative_to(REPO)} and show its expansion")
    for line in SMOLLM.read_text().splitlines():
        ctx.steps.say(f"  | {line}")
    ctx.show("apply", "-n", NAMESPACE, "-f", str(SMOLLM))
    ctx.show("get", "wk", "-n", NAMESPACE, _name(SMOLLM), "-o", "yaml")
    ctx.steps.end()


def _name(path: Path) -> str:
    import yaml

    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Workspace":
            return str(doc["metadata"]["name"])
    raise DemoError(f"{path} holds no Workspace")


def step_wait_ready(ctx: Ctx) -> None:
    ctx.steps.begin("Wait until WORKSPACEREADY is True (nodes, pod, model loading)")
    wait_for_condition(
        ctx,
        _name(SMOLLM),
        lambda c: c.get("WorkspaceReady", {}).get("status") == "True",
        timeout=900,
    )
    ctx.show("get", "workspace", "-n", NAMESPACE)
    ctx.steps.end()


def step_chat(ctx: Ctx) -> None:
    ctx.steps.begin(f'POST /chat {{"prompt": "{QUESTION}"}} through the apiserver\'s service proxy')
    name = _name(SMOLLM)
    body = json.dumps({"prompt": QUESTION, "generate_kwargs": {"max_new_tokens": 24}})
    loopback = (ctx.dir / READY_FILE).read_text().strip() != "netns"
    if loopback:
        answer = _chat_direct(ctx, name, body)
    else:
        path = f"/api/v1/namespaces/{NAMESPACE}/services/{name}:80/proxy/chat"
        ctx.steps.say(f"$ kubectl create --raw {path} -f - <<< '{body}'")
        answer = ctx.kubectl("create", "--raw", path, "-f", "-", input=body, timeout=300).stdout
    try:
        text = str(json.loads(answer).get("Result", answer))
    except (json.JSONDecodeError, AttributeError):
        text = answer
    ctx.steps.say(f"answer: {text.strip()}")
    if "paris" not in text.lower():
        raise DemoError(f"the model's answer does not mention Paris: {text!r}")
    ctx.show("get", "workspace", "-n", NAMESPACE)
    ctx.steps.end()


def _chat_direct(ctx: Ctx, name: str, body: str) -> str:
    pods = ctx.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", f"kaito.sh/workspace={name}", "-o", "json"
    )
    items = json.loads(pods.stdout)["items"]
    if not items:
        raise DemoError(f"no pod of Workspace {name} found")
    ip = items[0]["status"].get("podIP", "127.0.0.1")
    url = f"http://{ip}:5000/chat"
    ctx.steps.say(f"(loopback mode) POST {url}")
    req = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=300) as resp:  # noqa: S310 (our own pod's address)
        return str(resp.read().decode())


def step_failures(ctx: Ctx) -> None:
    ctx.steps.begin("Every failure explained: phi-3 without quota, llama-3.3-70b that cannot fit")
    ctx.show("apply", "-n", NAMESPACE, "-f", str(PHI3))
    phi = _name(PHI3)

    def quota(conds: dict[str, dict[str, Any]]) -> bool:
        return "quota" in str(conds.get("ResourceReady", {}).get("message", "")).lower()

    wait_for_condition(ctx, phi, quota, timeout=120)
    ctx.show("get", "workspace", "-n", NAMESPACE)
    cond = workspace_conditions(ctx, phi).get("ResourceReady", {})
    ctx.steps.say(
        f"status.conditions[ResourceReady]: reason {cond.get('reason')}: {cond.get('message')}"
    )
    ctx.steps.say(f"$ kubectl apply -f {TOO_SMALL.relative_to(REPO)}")
    refused = ctx.kubectl("apply", "-n", NAMESPACE, "-f", str(TOO_SMALL), check=False)
    for line in (refused.stdout + refused.stderr).strip().splitlines():
        ctx.steps.say(f"  {line}")
    if refused.returncode == 0:
        raise DemoError(f"{TOO_SMALL.name} was accepted; the webhook should refuse it (GPU fit)")
    ctx.steps.end()


def run_up(state: Path, steps: Steps) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    ctx = Ctx(state, steps)
    try:
        for step in (
            step_control_plane,
            step_reconciler,
            step_agents,
            step_apply_smollm,
            step_wait_ready,
            step_chat,
            step_failures,
        ):
            step(ctx)
        steps.begin("The system keeps running: how to use it, how to stop it")
        show_usage(ctx, _name(SMOLLM), NAMESPACE)
        steps.end()
    finally:
        if ctx.api is not None:
            ctx.api.close()
