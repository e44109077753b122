"""The model API key from a Secret, and Ray's token auth for multi-node Workspaces (issue L).

Before: the servers took `--api-key-file` but nothing wired it, so a Workspace could not turn
it on; a multi-node Workspace's Ray head and workers took any peer that could reach them.
Now the annotation kaito.sh/api-key-secret mounts the Secret's `api-key` read only into the
model container and passes `--api-key-file` to the transformers server or the vLLM front; a
missing Secret is named in status instead of a pod stuck in ContainerCreating; and every
pod of a multi-node Workspace runs Ray with RAY_AUTH_MODE=token and the token of one Secret
the pass creates once and never rewrites. Pure builder tests first, then the real apiserver.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from crds.workspace import ANNOTATION_API_KEY_SECRET, parse_workspace
from reconciler.common import HTTP_PORT
from reconciler.expansion import prepare
from reconciler.kube import Kube, KubeError
from reconciler.objects import desired_objects, ray_token_secret, secrets_needed
from reconciler.podsecurity import NON_ROOT_UID
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.cli_steps import Step, parse_command, place
from tests.reconciler.helpers import (
    catalog,
    conditions,
    create_ws,
    get_obj,
    get_ws,
    phi3,
    reconcile,
    tuning_ws,
    unique,
    wait,
)
from tests.reconciler.test_objects import CASES, _multi

Obj = dict[str, Any]
KEY_FILE = "/mnt/api-key/api-key"
SCHEMA_VERSION = "1.30.0"  # as tests/reconciler/test_commands_match_clis.py


def _meta(obj: Obj, ns: str = "default") -> Obj:
    obj["metadata"].update(namespace=ns, uid="1111-2222", generation=1)
    return obj


def _keyed(obj: Obj, name: str = "model-api-key") -> Obj:
    obj["metadata"].setdefault("annotations", {})[ANNOTATION_API_KEY_SECRET] = name
    return obj


def _transformers() -> Obj:
    ws = phi3("ws-cpu", "cpu", instance_type="Standard_D4s_v3")
    ws["inference"] = {"preset": {"name": "smollm2-135m-instruct"}}
    return ws


def _render(obj: Obj, nodes: list[str]) -> tuple[Any, list[Obj]]:
    prep = prepare(_meta(obj), catalog())
    return prep.ws, desired_objects(prep.ws, prep.resolved, nodes)


def _pods(objs: list[Obj]) -> list[Obj]:
    return [o["spec"]["template"]["spec"] for o in objs
            if o["kind"] in ("Deployment", "StatefulSet", "Job")]


def _model(pod: Obj) -> Obj:
    container: Obj = next(c for c in pod["containers"] if c["name"] == "model")
    return container


KEYED = [
    pytest.param(_keyed(phi3("ws-vllm", "vllm")), ["gpu-1"], "runtime.serving.vllm_front",
                 "Deployment", id="vllm-one-node"),
    pytest.param(_keyed(_transformers()), ["cpu-1"], "runtime.serving.server", "Deployment",
                 id="transformers-one-node"),
    pytest.param(_keyed(_multi()), ["gpu-1", "gpu-2", "gpu-3"], "runtime.serving.vllm_front",
                 "StatefulSet", id="vllm-multi-node"),
]


@pytest.mark.parametrize(("obj", "nodes"), CASES)
def test_without_the_annotation_no_key_is_mounted_or_asked_for(obj: Obj, nodes: list[str]) -> None:
    for pod in _pods(_render(obj, nodes)[1]):
        assert not any("secret" in v and v["name"] == "api-key" for v in pod["volumes"])
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert "--api-key-file" not in container["command"]
            assert not any(m["mountPath"] == "/mnt/api-key"
                           for m in container.get("volumeMounts", []))


@pytest.mark.parametrize(("obj", "nodes", "module", "kind"), KEYED)
def test_the_named_secret_is_mounted_read_only_and_passed_to_the_server(
    obj: Obj, nodes: list[str], module: str, kind: str,
) -> None:
    _ws, objs = _render(obj, nodes)
    assert [o["kind"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")] == [kind]
    (pod,) = _pods(objs)
    model = _model(pod)
    parsed = parse_command(model)  # the server's own parser accepts the flag
    assert parsed is not None
    parsed_module, args, _rest = parsed
    assert parsed_module == module
    assert args.api_key_file == Path(KEY_FILE)
    where = place(Step(pod, model, parsed_module, args, []), args.api_key_file)
    assert not where.writable
    assert where.inside == "api-key"
    assert where.volume["secret"] == {"secretName": "model-api-key", "defaultMode": 0o440,
                                      "items": [{"key": "api-key", "path": "api-key"}]}
    # the key file is readable by the server's non-root uid: root-owned, group = fsGroup
    security = pod["securityContext"]
    assert security["runAsUser"] == NON_ROOT_UID
    assert security["fsGroup"] == NON_ROOT_UID
    assert where.volume["secret"]["defaultMode"] & 0o040
    # only the model container sees the key
    for container in pod.get("initContainers", []):
        assert "api-key" not in {m["name"] for m in container.get("volumeMounts", [])}
    # the probes stay on /health, which the servers keep open
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert model[probe]["httpGet"] == {"path": "/health", "port": HTTP_PORT,
                                           "scheme": "HTTP"}
    for o in objs:
        kubernetes_validate.validate(o, SCHEMA_VERSION, strict=True)


def test_the_vllm_front_takes_the_key_and_vllm_never_sees_it() -> None:
    _ws, objs = _render(_keyed(phi3("ws-vllm", "vllm")), ["gpu-1"])
    command = _model(_pods(objs)[0])["command"]
    split = command.index("--")
    assert command[split - 2:split] == ["--api-key-file", KEY_FILE]
    assert KEY_FILE not in command[split:]


def test_only_the_multi_node_statefulset_runs_ray_with_token_auth() -> None:
    ws, objs = _render(_multi(), ["gpu-1", "gpu-2", "gpu-3"])
    (pod,) = _pods(objs)
    env = {e["name"]: e for e in _model(pod)["env"]}
    assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}
    assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {
        "name": "workspace-llama-3-3-70b-ray-token", "key": "auth_token"}}
    assert "value" not in env["RAY_AUTH_TOKEN"]  # the token never sits in the pod spec
    assert not any(o["kind"] == "Secret" for o in objs)  # random: made by the pass, not a plan
    assert secrets_needed(ws, objs) == ("", "workspace-llama-3-3-70b-ray-token")
    for obj, nodes in ((phi3("ws-one", "one"), ["gpu-1"]), (_transformers(), ["cpu-1"]),
                       (tuning_ws("ws-tune", "tune"), ["gpu-1"])):
        one_ws, one = _render(obj, nodes)
        for pod in _pods(one):
            for container in pod.get("initContainers", []) + pod["containers"]:
                names = {e["name"] for e in container.get("env", [])}
                assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
        assert secrets_needed(one_ws, one) == ("", "")


def test_the_secrets_a_keyed_workspace_needs() -> None:
    ws, objs = _render(_keyed(phi3("ws-vllm", "vllm"), "team-key"), ["gpu-1"])
    assert secrets_needed(ws, objs) == ("team-key", "")
    ws, objs = _render(_keyed(_multi(), "team-key"), ["gpu-1", "gpu-2", "gpu-3"])
    assert secrets_needed(ws, objs) == ("team-key", "workspace-llama-3-3-70b-ray-token")


def test_the_ray_token_secret_is_an_owned_immutable_child() -> None:
    ws = parse_workspace(_meta(_multi()))
    secret = ray_token_secret(ws, "t0ken")
    assert secret["kind"] == "Secret"
    assert secret["immutable"] is True
    assert secret["stringData"] == {"auth_token": "t0ken"}
    md = secret["metadata"]
    assert md["name"] == "workspace-llama-3-3-70b-ray-token"
    assert md["ownerReferences"][0]["uid"] == "1111-2222"
    assert md["ownerReferences"][0]["controller"] is True
    assert md["labels"] == {"kaito.sh/workspace": "workspace-llama-3-3-70b",
                            "kaito.sh/workspacenamespace": "default"}
    kubernetes_validate.validate(secret, SCHEMA_VERSION, strict=True)


# --- the real apiserver ------------------------------------------------------------------


@pytest.fixture
def kube(api_client: client.ApiClient, workspace_crd: object) -> Kube:
    """The reconciler's client: its call log is what the passes did."""
    return Kube(api_client)


@pytest.fixture
def setup(api_client: client.ApiClient) -> Kube:
    """The test's own client, so that its writes and reads stay out of the passes' log."""
    return Kube(api_client)


@pytest.fixture
def gpu_nodes(api_client: client.ApiClient) -> Iterator[dict[str, str]]:
    """One V100 node for phi-3 and three A100 nodes for llama-70b, each set with its label."""
    labels = {"one": unique("one"), "multi": unique("multi")}
    made = [unique("v100")]
    create_gpu_node(api_client, made[0], instance_type="Standard_NC6s_v3", gpus=1,
                    labels={"apps": labels["one"]})
    for _ in range(3):
        made.append(unique("a100"))
        create_gpu_node(api_client, made[-1], instance_type="Standard_NC24ads_A100_v4", gpus=2,
                        labels={"apps": labels["multi"]})  # as tests/reconciler/test_rbac.py
    yield labels
    for name in made:
        delete_node(api_client, name)


def _secret_calls(kube: Kube, mark: int) -> list[tuple[str, str]]:
    return [(c.verb, c.path.rsplit("/", 1)[-1]) for c in kube.log.since(mark)
            if c.resource == "secrets"]


def _reason(api: client.ApiClient, ns: str, name: str, kind: str = "InferenceReady",
            ) -> tuple[str, str, str]:
    cond = conditions(get_ws(api, ns, name))[kind]
    return str(cond["status"]), str(cond["reason"]), str(cond["message"])


def _secret(setup: Kube, ns: str, name: str, data: dict[str, str]) -> Obj:
    return setup.create({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": name, "namespace": ns}, "stringData": data})


def _owned_secrets(setup: Kube, ns: str, uid: str) -> list[Obj]:
    return [s for s in setup.list_items("v1", "Secret", ns)
            if any(o.get("uid") == uid for o in s["metadata"].get("ownerReferences") or [])]


def _data(secret: Obj, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


@pytest.mark.cluster
def test_a_missing_api_key_secret_is_named_in_status_until_it_exists(
    api_client: client.ApiClient, kube: Kube, setup: Kube, namespace: str,
    gpu_nodes: dict[str, str],
) -> None:
    create_ws(api_client, namespace, _keyed(phi3("ws-keyed", gpu_nodes["one"])))
    mark = kube.log.mark()
    reconcile(kube, namespace)
    status, reason, message = _reason(api_client, namespace, "ws-keyed")
    assert (status, reason) == ("False", "ApiKeySecretMissing")
    assert f"Secret {namespace}/model-api-key" in message
    assert ANNOTATION_API_KEY_SECRET in message
    assert "--from-literal=api-key=" in message
    assert _reason(api_client, namespace, "ws-keyed", "WorkspaceReady")[:2] == (
        "False", "ApiKeySecretMissing")
    with pytest.raises(KubeError) as missing:  # no pod that could only wait was made
        get_obj(setup, "apps/v1", "Deployment", namespace, "ws-keyed")
    assert missing.value.not_found
    events = setup.list_items("v1", "Event", namespace)
    assert any(e.get("reason") == "ApiKeySecretMissing" and e.get("type") == "Warning"
               for e in events)
    # the pass read that one Secret by name (metadata only), and listed none
    assert _secret_calls(kube, mark) == [("get", "model-api-key")]

    _secret(setup, namespace, "model-api-key",
            {"api-key": "sk-test-0123456789", "unrelated": "not mounted"})
    assert "data" not in kube.get_metadata("v1", "Secret", namespace, "model-api-key")
    reconcile(kube, namespace)
    assert _reason(api_client, namespace, "ws-keyed")[1] != "ApiKeySecretMissing"
    deployment = get_obj(setup, "apps/v1", "Deployment", namespace, "ws-keyed")
    pod = deployment["spec"]["template"]["spec"]
    model = _model(pod)
    assert model["command"][model["command"].index("--api-key-file") + 1] == KEY_FILE
    assert {"name": "api-key", "mountPath": "/mnt/api-key", "readOnly": True} in (
        model["volumeMounts"])
    volume = next(v for v in pod["volumes"] if v["name"] == "api-key")
    assert volume["secret"]["secretName"] == "model-api-key"
    assert volume["secret"]["items"] == [{"key": "api-key", "path": "api-key"}]


@pytest.mark.cluster
def test_a_multi_node_workspace_gets_one_ray_token_that_later_passes_keep(
    api_client: client.ApiClient, kube: Kube, setup: Kube, namespace: str,
    gpu_nodes: dict[str, str],
) -> None:
    body = phi3("ws-multi", gpu_nodes["multi"], instance_type="Standard_NC24ads_A100_v4")
    body["inference"] = {"preset": {"name": "llama-3.3-70b-instruct",
                                    "presetOptions": {"modelAccessSecret": "hf-token"}}}
    uid = create_ws(api_client, namespace, body)["metadata"]["uid"]
    first_pass = reconcile(kube, namespace)
    assert first_pass.failed == 0, first_pass.failures
    sts = get_obj(setup, "apps/v1", "StatefulSet", namespace, "ws-multi")
    env = {e["name"]: e for e in _model(sts["spec"]["template"]["spec"])["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    owned = _owned_secrets(setup, namespace, uid)
    assert [s["metadata"]["name"] for s in owned] == [ref["name"]] == ["ws-multi-ray-token"]
    first = owned[0]
    token = _data(first, ref["key"])
    assert len(token) >= 43  # secrets.token_urlsafe(32)
    assert first["immutable"] is True

    mark = kube.log.mark()
    again = reconcile(kube, namespace)
    assert again.failed == 0, again.failures
    second = get_obj(setup, "v1", "Secret", namespace, "ws-multi-ray-token")
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert _data(second, "auth_token") == token
    assert _secret_calls(kube, mark) == [("get", "ws-multi-ray-token")]  # read, not written

    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "kaito.sh", "v1beta1", namespace, "workspaces", "ws-multi")

    def gone() -> bool:
        reconcile(kube, namespace)
        return not _owned_secrets(setup, namespace, uid)

    # the pass drops the finalizer; the garbage collector removes the owned Secret
    wait(gone, 120, "the Ray token Secret to go with its Workspace", 1.0)


@pytest.mark.cluster
def test_a_same_named_secret_of_someone_else_is_never_taken_over(
    api_client: client.ApiClient, kube: Kube, setup: Kube, namespace: str,
    gpu_nodes: dict[str, str],
) -> None:
    _secret(setup, namespace, "ws-other-ray-token", {"auth_token": "theirs"})
    body = phi3("ws-other", gpu_nodes["multi"], instance_type="Standard_NC24ads_A100_v4")
    body["inference"] = {"preset": {"name": "llama-3.3-70b-instruct",
                                    "presetOptions": {"modelAccessSecret": "hf-token"}}}
    create_ws(api_client, namespace, body)
    reconcile(kube, namespace)
    _status, reason, message = _reason(api_client, namespace, "ws-other")
    assert reason == "ChildConflict"
    assert f"Secret {namespace}/ws-other-ray-token" in message
    kept = get_obj(setup, "v1", "Secret", namespace, "ws-other-ray-token")
    assert _data(kept, "auth_token") == "theirs"
    assert not kept["metadata"].get("ownerReferences")
    with pytest.raises(KubeError) as missing:  # no pod would run with a token it did not make
        get_obj(setup, "apps/v1", "StatefulSet", namespace, "ws-other")
    assert missing.value.not_found
