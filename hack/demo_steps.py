"""Steps 5-10 of `make demo`: the terse Workspace, readiness, /chat, tuning, failures, usage.

Why: hack/demo.py is the command line and demo_bringup brings the system up; this module
is the walk-through itself, against the operator running as pods (the webhook admits, the
reconciler's CronJob passes reconcile; the demo triggers a pass from the CronJob while it
waits instead of waiting for the minute). Re-applying a Workspace is harmless (the webhook
keeps it `unchanged`), so a second `make demo` repeats the walk-through in seconds. The
tuning step runs examples/smollm2-135m-tuning.yaml (REGISTRY_HERE replaced by the rig
registry's pod side) as a real Job from the tuning image; a finished Job is reported again,
not rerun.

It must not: wait without a deadline, print a step without its number and time, or call
any kubectl but the rig's.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from demo_bringup import Ctx, step_control_plane, step_images, step_nodes, step_operator
from demo_common import REPO, DemoError, Steps
from demo_show import show_startup, show_usage, wait_for_condition, workspace_conditions

NAMESPACE = "default"
SMOLLM = REPO / "examples" / "smollm2-135m-instruct.yaml"
PHI3 = REPO / "examples" / "kaito_workspace_phi_3.yaml"
TOO_SMALL = REPO / "examples" / "llama-3.3-70b-too-small.yaml"
TUNING = REPO / "examples" / "smollm2-135m-tuning.yaml"
TUNING_SECRET = "registry-secret"  # noqa: S105 (the Secret's name in the example)
TUNING_TIMEOUT_S = 1200
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


def _tuning_docs(ctx: Ctx) -> list[dict[str, Any]]:
    import yaml

    text = TUNING.read_text().replace("REGISTRY_HERE", ctx.pod_registry_host)
    return [d for d in yaml.safe_load_all(text) if d]


def _push_secret(ctx: Ctx) -> Path:
    """The registry's pod-side credentials: a dockerconfigjson file and the Secret."""
    from rig.imageregistry import ImageRegistry

    config = ImageRegistry(ctx.state).docker_config()
    path = ctx.dir / "registry-secret.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(config))
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
              "metadata": {"name": TUNING_SECRET, "namespace": NAMESPACE},
              "data": {".dockerconfigjson": base64.b64encode(path.read_bytes()).decode()}}
    ctx.kubectl("apply", "-f", "-", input=json.dumps(secret))
    ctx.steps.say(f"Secret {TUNING_SECRET} (kubernetes.io/dockerconfigjson) for "
                  f"{ctx.pod_registry_host}")
    return path


def _push_weights(ctx: Ctx, reference: str, secret: Path) -> None:
    argv = [sys.executable, "-m", "kaito", "model", "push", "smollm2-135m-instruct",
            reference, "--push-secret", str(secret), "--plain-http"]
    ctx.steps.say(f"$ kaito model push smollm2-135m-instruct {reference} --push-secret ... "
                  "--plain-http   (the base weights, as a model artifact)")
    env = {**os.environ, "KAITO_OCI_ALLOW_PRIVATE": "1"}  # the rig's bridge address
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env,
                          check=False, cwd=REPO)
    if done.returncode != 0:
        raise DemoError(f"kaito model push failed (exit {done.returncode}):\n"
                        f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    ctx.steps.say(f"[{ctx.steps.elapsed():5.0f} s] weights pushed")


def _job_pod(ctx: Ctx, job: str) -> dict[str, Any]:
    pods = json.loads(ctx.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"job-name={job}",
                                  "-o", "json").stdout)["items"]
    return dict(pods[-1]) if pods else {}


def _pod_progress(pod: dict[str, Any]) -> str:
    """`pod on node: fetch-data done, train running, push waiting` (one line)."""
    if not pod:
        return "no pod yet"
    status = pod.get("status") or {}
    parts = []
    for cs in [*(status.get("initContainerStatuses") or []),
               *(status.get("containerStatuses") or [])]:
        state = cs.get("state") or {}
        if "terminated" in state:
            t = state["terminated"]
            parts.append(f"{cs['name']} {'done' if t.get('exitCode') == 0 else t.get('reason')}")
        elif "running" in state:
            parts.append(f"{cs['name']} running")
        else:
            parts.append(f"{cs['name']} {(state.get('waiting') or {}).get('reason', 'waiting')}")
    where = pod["spec"].get("nodeName") or "-"
    return f"pod {pod['metadata']['name']} on {where}: {', '.join(parts) or status.get('phase')}"


def _events(ctx: Ctx, pod: str, container: str) -> list[dict[str, Any]]:
    log = ctx.kubectl("logs", "-n", NAMESPACE, pod, "-c", container).stdout
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def step_tuning(ctx: Ctx) -> None:
    ctx.steps.begin(f"Tune SmolLM2 with LoRA: {TUNING.relative_to(REPO)} as a real Job from "
                    "the tuning image, its adapter pushed to the registry")
    docs = _tuning_docs(ctx)
    ws = next(d for d in docs if d["kind"] == "Workspace")
    name = str(ws["metadata"]["name"])
    secret = _push_secret(ctx)
    artifact = str(ws["metadata"]["annotations"]["kaito.sh/model-artifact"])
    conds = workspace_conditions(ctx, name) if ctx.kubectl(
        "get", "workspace", "-n", NAMESPACE, name, check=False).returncode == 0 else {}
    if conds.get("WorkspaceSucceeded", {}).get("status") != "True":
        _push_weights(ctx, artifact.removeprefix("oci://"), secret)
    rendered = ctx.dir / TUNING.name
    import yaml

    rendered.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    ctx.show("apply", "-n", NAMESPACE, "-f", str(rendered))
    started, last, last_print = time.monotonic(), "", 0.0
    while True:
        ctx.reconcile()
        conds = workspace_conditions(ctx, name)
        verdict = conds.get("WorkspaceSucceeded", {})
        line = _pod_progress(_job_pod(ctx, name))
        now = time.monotonic()
        if line != last or now - last_print > 15:
            ctx.steps.say(f"[{ctx.steps.elapsed():5.0f} s] {line}")
            last, last_print = line, now
        if verdict.get("status") == "True":
            break
        if verdict.get("status") == "False" and verdict.get("reason") != "TuningPending":
            raise DemoError(f"tuning failed: {verdict.get('reason')}: {verdict.get('message')}")
        if now - started > TUNING_TIMEOUT_S:
            raise DemoError(f"the tuning Job did not finish in {TUNING_TIMEOUT_S} s; last: "
                            f"{line}; WorkspaceSucceeded: {verdict}")
        time.sleep(2)
    _show_tuning_result(ctx, name, str(ws["tuning"]["output"]["image"]))
    ctx.show("get", "workspace", "-n", NAMESPACE, name)
    ctx.steps.end()


def _show_tuning_result(ctx: Ctx, name: str, output: str) -> None:
    from datetime import datetime

    from rig.imageregistry import ImageRegistry

    job = json.loads(ctx.kubectl("get", "job", "-n", NAMESPACE, name, "-o", "json").stdout)
    status = job.get("status") or {}
    if status.get("startTime") and status.get("completionTime"):
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        took = (datetime.strptime(status["completionTime"], fmt)
                - datetime.strptime(status["startTime"], fmt)).total_seconds()
        ctx.steps.say(f"Job {name} succeeded: {took:.0f} s from start to completion")
    pod = _job_pod(ctx, name)
    done = [e for e in _events(ctx, pod["metadata"]["name"], "train")
            if e.get("event") == "done"] if pod else []
    if done:
        ctx.steps.say(f"train: {done[0]['steps']} LoRA steps, final loss "
                      f"{float(done[0]['final_loss']):.3f}")
    else:
        ctx.steps.say(f"train: no log left for the pod ({pod.get('metadata', {}).get('name')})")
    repository, tag = output.split("/", 1)[1].rsplit(":", 1)
    registry = ImageRegistry(ctx.state)
    digest, manifest = registry.manifest(repository, tag)
    ctx.steps.say(f"pushed adapter {output} ({digest}), read back from the registry")
    for layer in manifest.get("layers") or []:
        title = (layer.get("annotations") or {}).get("org.opencontainers.image.title")
        ctx.steps.say(f"  layer {title}: {int(layer['size'])} bytes")
    ctx.steps.say(f"registry tags of {repository}: {', '.join(registry.tags(repository))}")


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
            step_tuning,
            step_failures,
        ):
            step(ctx)
        steps.begin("The system keeps running: how to use it, how to stop it")
        show_usage(ctx, _name(SMOLLM), _preset(SMOLLM), NAMESPACE)
        steps.end()
    finally:
        if ctx.api is not None:
            ctx.api.close()
