"""Steps 5-9 of `make demo`: the terse Workspace, readiness, /chat, failures, usage.

Why: hack/demo.py is the command line and demo_bringup brings the system up; this module
is the walk-through itself, against the operator running as pods (the webhook admits, the
reconciler's CronJob passes reconcile; the demo triggers a pass from the CronJob while it
waits instead of waiting for the minute). Re-applying a Workspace is harmless (the webhook
keeps it `unchanged`), so a second `make demo` repeats the walk-through in seconds.

It must not: wait without a deadline, print a step without its number and time, or call
any kubectl but the rig's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from demo_bringup import Ctx, step_control_plane, step_images, step_nodes, step_operator
from demo_common import REPO, DemoError, Steps
from demo_show import show_startup, show_usage, wait_for_condition, workspace_conditions

NAMESPACE = "default"
SMOLLM = REPO / "examples" / "smollm2-135m-instruct.yaml"
PHI3 = REPO / "examples" / "kaito_workspace_phi_3.yaml"
TOO_SMALL = REPO / "examples" / "llama-3.3-70b-too-small.yaml"
QUESTION = "What is the capital of France?"


def step_apply_smollm(ctx: Ctx) -> None:
    ctx.steps.begin(f"Apply the terse Workspace {SMOLLM.relative_to(REPO)}: the webhook pods "
                    "admit it (defaults filled in)")
    for line in SMOLLM.read_text().splitlines():
        ctx.steps.say(f"  | {line}")
    ctx.show("apply", "-n", NAMESPACE, "-f", str(SMOLLM))
    _show_expanded(ctx, _name(SMOLLM))
    ctx.steps.end()


def _show_expanded(ctx: Ctx, name: str) -> None:
    """`kubectl get wk NAME -o yaml` without managedFields (kubectl 1.20 prints them)."""
    import yaml

    obj = json.loads(ctx.kubectl("get", "wk", "-n", NAMESPACE, name, "-o", "json").stdout)
    obj["metadata"].pop("managedFields", None)
    ctx.steps.say(f"$ kubectl get wk {name} -o yaml   (managedFields left out)")
    for line in yaml.safe_dump(obj, sort_keys=True).rstrip().splitlines():
        ctx.steps.say(f"  {line}")


def _workspace(path: Path) -> dict[str, Any]:
    import yaml

    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Workspace":
            return dict(doc)
    raise DemoError(f"{path} holds no Workspace")


def _name(path: Path) -> str:
    return str(_workspace(path)["metadata"]["name"])


def _preset(path: Path) -> str:
    return str(_workspace(path)["inference"]["preset"]["name"])


def step_wait_ready(ctx: Ctx) -> None:
    ctx.steps.begin("Wait until WORKSPACEREADY is True (NodeClaim, real node, image, model)")
    wait_for_condition(
        ctx,
        _name(SMOLLM),
        lambda c: c.get("WorkspaceReady", {}).get("status") == "True",
        timeout=900,
        tick=ctx.reconcile,
    )
    ctx.show("get", "workspace", "-n", NAMESPACE)
    ctx.show("get", "pods", "-n", NAMESPACE, "-o", "wide", "-l",
             f"kaito.sh/workspace={_name(SMOLLM)}")
    show_startup(ctx, _name(SMOLLM), NAMESPACE)
    ctx.steps.end()


def step_chat(ctx: Ctx) -> None:
    ctx.steps.begin(f'POST /chat {{"prompt": "{QUESTION}"}} through its Service')
    name = _name(SMOLLM)
    body = json.dumps({"prompt": QUESTION, "generate_kwargs": {"max_new_tokens": 24}})
    image = ctx.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"kaito.sh/workspace={name}",
                        "-o", "jsonpath={.items[0].status.containerStatuses[0].imageID}").stdout
    ctx.steps.say(f"the model pod runs {image} (pulled from the local registry)")
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
    ctx.steps.say(f"Paris answered {ctx.steps.total():.1f} s after `make demo` started")
    ctx.show("get", "workspace", "-n", NAMESPACE)
    ctx.steps.end()


def step_failures(ctx: Ctx) -> None:
    ctx.steps.begin("Every failure explained: phi-3 without quota, llama-3.3-70b that cannot fit")
    ctx.show("apply", "-n", NAMESPACE, "-f", str(PHI3))
    phi = _name(PHI3)

    def quota(conds: dict[str, dict[str, Any]]) -> bool:
        return "quota" in str(conds.get("ResourceReady", {}).get("message", "")).lower()

    wait_for_condition(ctx, phi, quota, timeout=180, tick=ctx.reconcile)
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
            step_images,
            step_nodes,
            step_operator,
            step_apply_smollm,
            step_wait_ready,
            step_chat,
            step_failures,
        ):
            step(ctx)
        steps.begin("The system keeps running: how to use it, how to stop it")
        show_usage(ctx, _name(SMOLLM), _preset(SMOLLM), NAMESPACE)
        steps.end()
    finally:
        if ctx.api is not None:
            ctx.api.close()
