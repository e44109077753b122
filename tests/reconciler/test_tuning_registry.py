"""The install's registry settings reach the tuning Job's command lines and env.

Why: an in-cluster registry without TLS (the rig's, or a user's) needs `--plain-http` on
the fetch and push steps, and base weights given as a model artifact need the registry
secret in the train step; a setting that never reaches the pod would only fail on a real
cluster. Each command is parsed with kaito-tune's own parser, so a flag it does not know
fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from crds.workspace import ANNOTATION_MODEL_ARTIFACT
from presets.catalog import load_catalog
from reconciler import weights
from reconciler.cli import add_arguments
from reconciler.expansion import prepare
from reconciler.objects import desired_objects
from reconciler.settings import Settings
from runtime.tuning.__main__ import build_parser as tune_parser

CATALOG = load_catalog()
OUT = "10.247.1.1:5000/kaito-py/adapter:1"
DATA = "10.247.1.1:5000/kaito-py/data:1"
WEIGHTS = "10.247.1.1:5000/kaito-py/smollm2:1"


def _job_pod(settings: dict[str, Any], *, annotations: dict[str, str] | None = None,
             preset_options: dict[str, Any] | None = None) -> dict[str, Any]:
    preset: dict[str, Any] = {"name": "smollm2-135m-instruct"}
    if preset_options:
        preset["presetOptions"] = preset_options
    obj = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
           "metadata": {"name": "t", "namespace": "default", "annotations": annotations or {}},
           "resource": {"instanceType": "Standard_D4s_v3",
                        "labelSelector": {"matchLabels": {"a": "b"}}},
           "tuning": {"preset": preset, "method": "lora",
                      "input": {"image": DATA},
                      "output": {"image": OUT, "imagePushSecret": "push"}}}
    prep = prepare(obj, CATALOG)
    job = next(o for o in desired_objects(prep.ws, prep.resolved, ["n1"], settings=settings)
               if o["kind"] == "Job")
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in [*pod["initContainers"], *pod["containers"]]
                                 if c["name"] == name)
    return found


def _args(container: dict[str, Any]) -> Any:
    assert container["command"][:3] == ["python", "-m", "runtime.tuning"]
    return tune_parser().parse_args(container["command"][3:])


@pytest.mark.parametrize("plain", [True, False])
def test_fetch_and_push_speak_plain_http_exactly_when_the_install_says_so(plain: bool) -> None:
    pod = _job_pod({"adapters_plain_http": plain})
    fetch, push = _args(_container(pod, "fetch-data")), _args(_container(pod, "push"))
    assert (fetch.image, push.image) == (DATA, OUT)
    assert fetch.plain_http is plain
    assert push.plain_http is plain


def test_the_flag_reaches_the_settings_the_pass_builds_from() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--adapters-plain-http"]).adapters_plain_http is True
    assert parser.parse_args([]).adapters_plain_http is False
    assert Settings(adapters_plain_http=True).adapters_plain_http is True


def test_train_pulls_an_artifact_with_the_presets_pull_secret() -> None:
    pod = _job_pod({"weights_plain_http": True},
                   annotations={ANNOTATION_MODEL_ARTIFACT: f"oci://{WEIGHTS}"},
                   preset_options={"imagePullSecrets": ["regcred"]})
    train = _container(pod, "train")
    assert _args(train).model == f"oci://{WEIGHTS}"
    env = {e["name"]: e.get("value") for e in train["env"]}
    assert env["KAITO_WEIGHTS_PLAIN_HTTP"] == "1"
    secret_file = env["KAITO_WEIGHTS_PULL_SECRET"]
    mount = next(m for m in train["volumeMounts"] if m["name"] == "weights-auth")
    assert secret_file.startswith(mount["mountPath"] + "/")
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "weights-auth")
    assert volume["secret"]["secretName"] == "regcred"
    assert volume["secret"]["items"][0]["path"] == secret_file.rsplit("/", 1)[1]


def test_no_artifact_means_no_weights_secret_in_the_job() -> None:
    pod = _job_pod({}, preset_options={"imagePullSecrets": ["regcred"]})
    assert all(v["name"] != "weights-auth" for v in pod["volumes"])
    env = {e["name"] for e in _container(pod, "train")["env"]}
    assert "KAITO_WEIGHTS_PULL_SECRET" not in env
    assert weights.CACHE_VOLUME in {v["name"] for v in pod["volumes"]}


def _env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


@pytest.mark.parametrize("allowed", [True, False])
def test_private_registries_are_allowed_in_every_step_exactly_when_the_install_says_so(
        allowed: bool) -> None:
    from runtime.netcheck import ALLOW_PRIVATE_ENV

    assert weights.ALLOW_PRIVATE_ENV == ALLOW_PRIVATE_ENV  # the name runtime.netcheck reads
    pod = _job_pod({"allow_private_registries": allowed})
    for name in ("fetch-data", "train", "push"):
        env = _env_of(_container(pod, name))
        assert (env.get(ALLOW_PRIVATE_ENV) == "1") is allowed, (name, env)


def test_the_private_registry_flag_reaches_the_settings() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--allow-private-registries"]).allow_private_registries is True
    assert parser.parse_args([]).allow_private_registries is False


def test_the_inference_weights_puller_gets_the_private_registry_switch() -> None:
    pod = weights.puller({ANNOTATION_MODEL_ARTIFACT: WEIGHTS},
                         {"allow_private_registries": True}, "img", "")
    assert pod is not None
    assert _env_of(pod)[weights.ALLOW_PRIVATE_ENV] == "1"


def _adapter_init(settings: dict[str, Any]) -> dict[str, Any]:
    obj = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
           "metadata": {"name": "s", "namespace": "default"},
           "resource": {"instanceType": "Standard_D4s_v3",
                        "labelSelector": {"matchLabels": {"a": "b"}}},
           "inference": {"preset": {"name": "smollm2-135m-instruct"},
                         "adapters": [{"source": {"name": "tuned", "image": OUT}}]}}
    prep = prepare(obj, CATALOG)
    workload = next(o for o in desired_objects(prep.ws, prep.resolved, ["n1"], settings=settings)
                    if o["kind"] in ("Deployment", "StatefulSet"))
    return _container(workload["spec"]["template"]["spec"], "adapter-0")


@pytest.mark.parametrize("plain", [True, False])
def test_an_inference_adapter_is_pulled_over_plain_http_exactly_when_the_install_says_so(
        plain: bool) -> None:
    from runtime.adapters.__main__ import build_parser as oci_parser

    container = _adapter_init({"adapters_plain_http": plain})
    cmd = container["command"]
    assert cmd[:3] == ["python", "-m", "runtime.adapters"]
    args = oci_parser().parse_args(cmd[3:])
    assert (args.command, args.reference, args.plain_http) == ("pull", OUT, plain)


@pytest.mark.parametrize("allowed", [True, False])
def test_an_inference_adapter_pull_gets_the_private_registry_switch(allowed: bool) -> None:
    env = _env_of(_adapter_init({"allow_private_registries": allowed}))
    assert (env.get(weights.ALLOW_PRIVATE_ENV) == "1") is allowed, env
