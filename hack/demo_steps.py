"""Steps 5-11 of `make demo`: the terse Workspace, readiness, /chat, tuning, vLLM, failures,
usage.

Why: hack/demo.py is the command line and demo_bringup brings the system up; this module
is the walk-through itself, against the operator running as pods (the webhook admits, the
reconciler's CronJob passes reconcile; the demo triggers a pass from the CronJob while it
waits instead of waiting for the minute). Re-applying a Workspace is harmless (the webhook
keeps it `unchanged`), so a second `make demo` repeats the walk-through in seconds. The
tuning step runs examples/smollm2-135m-tuning.yaml (REGISTRY_HERE replaced by the rig
registry's pod side) as a real Job from the tuning image; a finished Job is reported again,
not rerun. The vLLM step comes after the Paris answer, so that building vLLM's CPU image
(minutes on a fresh machine) never holds up the first answer: it publishes that image, has
the simulated Karpenter preload it, and serves examples/smollm2-135m-vllm.yaml from it with
the weights artifact the tuning step pushed (each of the two pushes it when absent).

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
import urllib.error
from pathlib import Path
from typing import Any

from demo_agents import AGENTS_CONFIG, read_preload, write_preload
from demo_bringup import (
    Ctx,
    build_and_publish,
    step_control_plane,
    step_images,
    step_nodes,
    step_operator,
)
from demo_common import REPO, DemoError, Steps
from demo_show import show_startup, show_usage, wait_for_condition, workspace_conditions

NAMESPACE = "default"
SMOLLM = REPO / "examples" / "smollm2-135m-instruct.yaml"
PHI3 = REPO / "examples" / "kaito_workspace_phi_3.yaml"
TOO_SMALL = REPO / "examples" / "llama-3.3-70b-too-small.yaml"
TUNING = REPO / "examples" / "smollm2-135m-tuning.yaml"
VLLM = REPO / "examples" / "smollm2-135m-vllm.yaml"
TUNING_SECRET = "registry-secret"  # noqa: S105 (the Secret's name in the example)
TUNING_TIMEOUT_S = 1200
VLLM_TIMEOUT_S = 1200  # a new node pulls the 3.9 GB image; vLLM compiles the model on start
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
    _ask(ctx, _name(SMOLLM))
    ctx.steps.say(f"Paris answered {ctx.steps.total():.1f} s after `make demo` started")
    ctx.show("get", "workspace", "-n", NAMESPACE)
    ctx.steps.end()


def _ask(ctx: Ctx, name: str) -> None:
    """POST /chat to Workspace `name` through its Service; the answer must say Paris."""
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
    _must_say_paris(text)


def _must_say_paris(text: str) -> None:
    if "paris" not in text.lower():
        raise DemoError(f"the model's answer does not mention Paris: {text!r}")


def _rendered(ctx: Ctx, path: Path) -> list[dict[str, Any]]:
    """The example's documents with REGISTRY_HERE replaced by the registry's pod side."""
    import yaml

    text = path.read_text().replace("REGISTRY_HERE", ctx.pod_registry_host)
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


def _repository_and_tag(reference: str) -> tuple[str, str]:
    """HOST[:PORT]/REPO:TAG (an `oci://` prefix allowed) -> (REPO, TAG)."""
    repository, tag = reference.removeprefix("oci://").split("/", 1)[1].rsplit(":", 1)
    return repository, tag


def _ensure_weights(ctx: Ctx, artifact: str, secret: Path) -> None:
    """The base weights artifact in the registry: pushed with `kaito model push` when absent
    (the tuning step's base and the vLLM step's weights are the same artifact)."""
    from rig.imageregistry import ImageRegistry

    reference = artifact.removeprefix("oci://")
    try:
        ImageRegistry(ctx.state).manifest(*_repository_and_tag(reference))
        ctx.steps.say(f"model artifact {artifact} is already in the registry")
        return
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise DemoError(f"the registry did not answer for {artifact}: {exc}") from exc
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
    docs = _rendered(ctx, TUNING)
    ws = next(d for d in docs if d["kind"] == "Workspace")
    name = str(ws["metadata"]["name"])
    secret = _push_secret(ctx)
    _ensure_weights(ctx, str(ws["metadata"]["annotations"]["kaito.sh/model-artifact"]), secret)
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
    repository, tag = _repository_and_tag(output)
    registry = ImageRegistry(ctx.state)
    digest, manifest = registry.manifest(repository, tag)
    ctx.steps.say(f"pushed adapter {output} ({digest}), read back from the registry")
    for layer in manifest.get("layers") or []:
        title = (layer.get("annotations") or {}).get("org.opencontainers.image.title")
        ctx.steps.say(f"  layer {title}: {int(layer['size'])} bytes")
    ctx.steps.say(f"registry tags of {repository}: {', '.join(registry.tags(repository))}")


def step_vllm(ctx: Ctx) -> None:
    from rig.imageregistry import RegistryError

    ctx.steps.begin(f"The same model on vLLM: {VLLM.relative_to(REPO)}, vLLM's CPU image in a "
                    "real pod, weights from the model artifact")
    try:
        published = build_and_publish(ctx, ("vllm-runtime",))
    except RegistryError as exc:
        raise DemoError(str(exc)) from exc
    config = ctx.dir / AGENTS_CONFIG
    names = {p.name for p in published}
    write_preload(config, [*(p for p in read_preload(config) if p[1] not in names),
                           *((p.local, p.name) for p in published)])
    ctx.steps.say("the simulated Karpenter's nodes now also preload "
                  f"{', '.join(sorted(names))}")
    docs = _rendered(ctx, VLLM)
    ws = next(d for d in docs if d["kind"] == "Workspace")
    name = str(ws["metadata"]["name"])
    _ensure_weights(ctx, str(ws["metadata"]["annotations"]["kaito.sh/model-artifact"]),
                    _push_secret(ctx))
    import yaml

    rendered = ctx.dir / VLLM.name
    rendered.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    ctx.show("apply", "-n", NAMESPACE, "-f", str(rendered))
    wait_for_condition(
        ctx, name, lambda c: c.get("WorkspaceReady", {}).get("status") == "True",
        timeout=VLLM_TIMEOUT_S, tick=ctx.reconcile)
    ctx.show("get", "pods", "-n", NAMESPACE, "-o", "wide", "-l", f"kaito.sh/workspace={name}")
    command = ctx.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"kaito.sh/workspace={name}",
                          "-o", "jsonpath={.items[0].spec.containers[0].command}").stdout
    ctx.steps.say(f"its command (the reconciler's): {' '.join(json.loads(command))}")
    show_startup(ctx, name, NAMESPACE)
    _ask(ctx, name)
    _ask_openai(ctx, name, str(ws["inference"]["preset"]["name"]))
    ctx.show("get", "workspace", "-n", NAMESPACE)
    ctx.steps.end()


def _ask_openai(ctx: Ctx, name: str, model: str) -> None:
    """POST /v1/chat/completions (vLLM's own OpenAI server, behind our front) through the
    apiserver's service proxy. Sent with the API client, not `kubectl create --raw`: vLLM
    takes only `Content-Type: application/json`, which kubectl 1.20 does not send."""
    from kubernetes.client.exceptions import ApiException

    body = {"model": model, "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": QUESTION}]}
    path = f"/api/v1/namespaces/{NAMESPACE}/services/{name}:80/proxy/v1/chat/completions"
    ctx.steps.say(f"POST {path} (Content-Type: application/json) {json.dumps(body)}")
    try:
        reply = ctx.api.call_api("POST", ctx.api.configuration.host + path, header_params={
            "Content-Type": "application/json", "Accept": "application/json"}, body=body,
            _request_timeout=300)
        reply.read()
    except (ApiException, OSError) as exc:
        raise DemoError(f"the OpenAI API through the service proxy failed: {exc}") from exc
    answer = (reply.data or b"").decode(errors="replace")
    if reply.status != 200:
        raise DemoError(f"the OpenAI API through the service proxy answered {reply.status}: "
                        f"{answer[:2000]}")
    try:
        text = str(json.loads(answer)["choices"][0]["message"]["content"])
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise DemoError(f"not an OpenAI chat completion: {answer[:2000]!r}") from None
    ctx.steps.say(f"OpenAI API answer: {text.strip()}")
    _must_say_paris(text)


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
            step_vllm,
            step_failures,
        ):
            step(ctx)
        steps.begin("The system keeps running: how to use it, how to stop it")
        show_usage(ctx, _name(SMOLLM), _preset(SMOLLM), NAMESPACE)
        steps.end()
    finally:
        if ctx.api is not None:
            ctx.api.close()
