"""Showing progress while the demo waits, and the closing "how to use it" text.

Why: a newcomer watching `make demo` must see what it is waiting for and for how long,
not a silent pause; and at the end, the exact commands to use the running system and
to stop it. It must not wait without a deadline: a timeout raises DemoError with the
Workspace's last conditions and where the logs are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from demo_common import DemoError

if TYPE_CHECKING:
    from demo_bringup import Ctx

Conditions = dict[str, dict[str, Any]]


def workspace_conditions(ctx: Ctx, name: str, namespace: str = "default") -> Conditions:
    done = ctx.kubectl("get", "workspace", "-n", namespace, name, "-o", "json")
    conds = (json.loads(done.stdout).get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conds}


def _waiting_for(conds: Conditions) -> str:
    if not conds:
        return "the reconciler to write a status"
    for ctype in (
        "ResourceReady",
        "InferenceReady",
        "JobStarted",
        "WorkspaceSucceeded",
        "WorkspaceReady",
    ):
        c = conds.get(ctype)
        if c is not None and c.get("status") != "True":
            return f"{ctype} ({c.get('reason')}): {c.get('message')}"
    return "WorkspaceReady"


def wait_for_condition(
    ctx: Ctx,
    name: str,
    done: Callable[[Conditions], bool],
    *,
    timeout: float,
    interval: float = 1.0,
    tick: Callable[[], str] | None = None,
) -> Conditions:
    """Poll the Workspace's conditions until `done`; print each new thing waited for, timed.

    tick: called between polls (the demo runs a reconcile pass there) and its line printed
    when it changes."""
    deadline = time.monotonic() + timeout
    last = ""
    last_tick = ""
    last_print = 0.0
    while True:
        conds = workspace_conditions(ctx, name)
        if done(conds):
            return conds
        what = _waiting_for(conds)
        now = time.monotonic()
        if what != last or now - last_print > 15:
            ctx.steps.say(f"[{ctx.steps.elapsed():5.1f} s] waiting for {what}")
            last, last_print = what, now
        if now > deadline:
            raise DemoError(
                f"Workspace {name} not there after {timeout:.0f} s; last: {what}\n"
                f"pods: kubectl get pods -A -o wide; the simulated Karpenter's log: "
                f"{ctx.dir / 'logs'}; node logs: {ctx.state / 'nodes' / 'logs'}"
            )
        if tick is not None:
            said = tick()
            counts = said.split("pass:")[-1].split(" duration=")[0]
            if said and counts != last_tick:
                ctx.steps.say(f"[{ctx.steps.elapsed():5.1f} s] reconcile {said.split('INFO ')[-1]}")
                last_tick = counts
        time.sleep(interval)


def show_startup(ctx: Ctx, name: str, namespace: str = "default") -> None:
    """Print the cold-start timeline the reconciler keeps in status.startup."""
    done = ctx.kubectl("get", "workspace", "-n", namespace, name, "-o", "json")
    steps = (json.loads(done.stdout).get("status") or {}).get("startup") or []
    if not steps:
        ctx.steps.say("(no cold-start timeline in status.startup yet)")
        return
    ctx.steps.say(f"cold start of {name} (status.startup; seconds since the step before):")
    for step in steps:
        ctx.steps.say(f"  {step.get('time')}  {step.get('step'):<14} +{step.get('seconds', 0):>4} s"
                      f"  {step.get('message', '')}")


def show_usage(ctx: Ctx, name: str, model: str, namespace: str = "default") -> None:
    proxy = f"http://127.0.0.1:8001/api/v1/namespaces/{namespace}/services/{name}:80/proxy"
    lines = [
        "Everything keeps running. To use it from another shell:",
        "",
        f"  export KUBECONFIG={ctx.cp.kubeconfig}",
        f"  alias kubectl={ctx.cp.kubectl}   # the rig's kubectl (same version as the server)",
        "  kubectl get wk",
        f"  kubectl get wk {name} -o yaml",
        "",
        "  # the model, through the apiserver's service proxy:",
        "  kubectl proxy --port 8001 &",
        f"  curl -s -X POST {proxy}/chat \\",
        "       -H 'Content-Type: application/json' \\",
        '       -d \'{"prompt": "What is the capital of France?"}\'',
        "",
        "  # or with the OpenAI client:",
        "  .venv/bin/python - <<'EOF'",
        "  import openai",
        f"  client = openai.OpenAI(base_url='{proxy}/v1', api_key='unused')",
        f"  reply = client.chat.completions.create(model='{model}',",
        "      messages=[{'role': 'user', 'content': 'What is the capital of France?'}])",
        "  print(reply.choices[0].message.content)",
        "  EOF",
        "",
        "  kubectl get pods -A -o wide   # the operator's and the model's pods, real nodes",
        "  kubectl logs -n kaito-system deploy/kaito-webhook",
        "",
        f"Logs: {ctx.dir / 'logs'} (the simulated Karpenter), {ctx.state / 'nodes' / 'logs'} "
        "(kubelets, dockerds)",
        "Stop everything and remove its state:  make down",
    ]
    for line in lines:
        ctx.steps.say(line)
