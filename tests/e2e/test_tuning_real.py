"""The tuning example runs as a real Job from the tuning image and pushes its adapter.

Why: the tuning Job's three steps (fetch, train, push) were only ever run as containers on
the host network (tests/images); nothing showed that the Job the reconciler builds runs on
a real kubelet: its volumes (the data ConfigMap, the training config, the push Secret),
its non-root securityContext, its env (plain HTTP, private registry addresses) and its
command lines. Here the operator is installed from manifests/ (the `installed` fixture of
tests/e2e/conftest.py, with the tuning image and the registry's pod side: the rig's
registry on the control plane's bridge address, basic auth, plain HTTP), the base weights
are pushed with `kaito model push` as a user would, and examples/smollm2-135m-tuning.yaml
is applied with only REGISTRY_HERE replaced. The reconciler's Job must run on a node the
rig's Karpenter started, succeed, report TuningSucceeded in status, and leave the adapter
in the registry with the layers an inference pod pulls. Figures (Job duration, adapter
size) are printed, never asserted. When a part cannot start, the test FAILS with the
reason; it never skips.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from rig import operator
from rig.images import build
from tests.e2e.conftest import Installed, InstallSpec

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(2400)]
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "smollm2-135m-tuning.yaml"
NS = "default"
SECRET = "registry-secret"
PRESET = "smollm2-135m-instruct"
# The rig's registry has no TLS and sits on a private (rig-made) address; the weights
# cache is per pod (emptyDir), so no host folder must be made writable for uid 65532.
INSTALL = InstallSpec(
    images=("operator", "cpu-runtime", "tuning-runtime"),
    reconciler_args=("--weights-plain-http", "--adapters-plain-http",
                     "--weights-cache=emptyDir", "--allow-private-registries"),
    pod_registry=True,
)
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors"}


def _docs(registry_host: str) -> list[dict[str, Any]]:
    text = EXAMPLE.read_text().replace("REGISTRY_HERE", registry_host)
    return [d for d in yaml.safe_load_all(text) if d]


def _workspace(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Workspace")


def _job_pod(inst: Installed, name: str) -> dict[str, Any]:
    pods = inst.get("pods", "-n", NS, "-l", f"job-name={name}")["items"]
    done = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    assert done, f"no Succeeded pod of Job {name}:\n{operator.pods_state(inst.kubectl, NS)}"
    return dict(done[0])


def _seconds(start: str, end: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (datetime.strptime(end, fmt) - datetime.strptime(start, fmt)).total_seconds()


def test_the_tuning_example_runs_as_a_real_job_and_pushes_its_adapter(
        installed: Installed, tmp_path: Path) -> None:
    pod_host = installed.registry.pod_host
    docs = _docs(pod_host)
    ws = _workspace(docs)
    name = ws["metadata"]["name"]
    config = installed.apply_registry_secret(SECRET, NS)
    artifact = ws["metadata"]["annotations"]["kaito.sh/model-artifact"]
    installed.push_model(PRESET, artifact.removeprefix("oci://"), config, tmp_path)
    manifest_file = tmp_path / "example.yaml"
    manifest_file.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    installed.kubectl("apply", "-n", NS, "-f", str(manifest_file))

    started = time.monotonic()
    conds = installed.reconcile_until(name, "WorkspaceSucceeded", 1200, NS,
                                      pending=("TuningPending",))
    print(f"tuning Workspace succeeded {time.monotonic() - started:.0f} s after apply")
    assert conds["WorkspaceSucceeded"]["reason"] == "TuningSucceeded"
    assert conds["JobStarted"]["status"] == "True"

    job = installed.get("job", "-n", NS, name)
    assert job["status"]["succeeded"] == 1
    print(f"Job {name}: {_seconds(job['status']['startTime'], job['status']['completionTime']):.0f}"
          " s from start to completion")
    pod = _job_pod(installed, name)
    tuning_image = f"ghcr.io/kaito-py/tuning-runtime:{build.version()}"
    spec = [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]
    assert [(c["name"], c["image"]) for c in spec] == [
        (step, tuning_image) for step in ("fetch-data", "train", "push")]
    steps = [*pod["status"]["initContainerStatuses"], *pod["status"]["containerStatuses"]]
    for status in steps:
        # the node's dockerd holds the image pulled from the rig's registry, tagged as named
        assert status["imageID"].startswith(
            f"docker-pullable://{installed.registry_host}/kaito-py/tuning-runtime@sha256:")
        assert status["state"]["terminated"]["exitCode"] == 0, status
    node = installed.get("node", pod["spec"]["nodeName"])
    assert pod["spec"]["nodeName"].startswith("aks-")  # a node the Karpenter started for it
    # the node pulled the image its Workspace runs, not every runtime image (GBs each)
    held = installed.nodes.docker(pod["spec"]["nodeName"], "images", "--format",
                                  "{{.Repository}}:{{.Tag}}").stdout.split()
    assert tuning_image in held
    assert f"ghcr.io/kaito-py/cpu-runtime:{build.version()}" not in held
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("docker://")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    # What the steps did is read from what they left: the adapter in the registry.
    output = ws["tuning"]["output"]["image"]
    repository, tag = output.split("/", 1)[1].rsplit(":", 1)
    assert installed.registry.tags(repository) == [tag]
    _, manifest = installed.registry.manifest(repository, tag)
    assert manifest["annotations"]["sh.kaito.artifact"] == "adapter"
    assert manifest["config"]["mediaType"] == "application/vnd.kaito.adapter.config.v1+json"
    layers = {layer["annotations"]["org.opencontainers.image.title"]: layer
              for layer in manifest["layers"]}
    assert set(layers) == ADAPTER_FILES
    assert {layer["mediaType"] for layer in layers.values()} == {
        "application/vnd.kaito.adapter.file.v1"}
    size = sum(int(layer["size"]) for layer in layers.values())
    assert layers["adapter_model.safetensors"]["size"] > 1000
    adapter = json.loads(installed.registry.blob(
        repository, layers["adapter_config.json"]["digest"]))
    assert adapter["peft_type"] == "LORA"
    assert adapter["r"] == 8  # runtime/tuning/defaults.yaml; the example changes no LoRA key
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    each = ", ".join(f"{k} {int(v['size'])} B" for k, v in sorted(layers.items()))
    print(f"adapter {pod_host}/{repository}:{tag}: {len(layers)} layers, {size / 1e6:.2f} MB "
          f"({each})")



def test_an_inference_pod_pulls_the_tuned_adapter_in_its_init_container(
        installed: Installed) -> None:
    """The adapter the tuning test pushed is pulled by the inference pod's init container
    (plain HTTP, a private address, the registry Secret) and served: /v1/models lists it and
    /chat answers through it."""
    docs = _docs(installed.registry.pod_host)
    tuned = _workspace(docs)
    output = tuned["tuning"]["output"]["image"]
    repository, tag = output.split("/", 1)[1].rsplit(":", 1)
    assert installed.registry.tags(repository) == [tag], "no adapter: see the tuning test"
    name = "workspace-smollm2-adapter"
    annotations = {"kaito.sh/model-artifact": tuned["metadata"]["annotations"][
        "kaito.sh/model-artifact"]}
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
          "metadata": {"name": name, "namespace": NS, "annotations": annotations},
          "resource": {"instanceType": "Standard_D4s_v3",
                       "labelSelector": {"matchLabels": {"apps": "smollm2-adapter"}}},
          "inference": {"preset": {"name": PRESET,
                                   "presetOptions": {"imagePullSecrets": [SECRET]}},
                        "adapters": [{"source": {"name": "smollm2-tuned", "image": output,
                                                 "imagePullSecrets": [SECRET]},
                                      "strength": "1.0"}]}}
    installed.kubectl("apply", "-f", "-", input=json.dumps(ws))
    started = time.monotonic()
    installed.reconcile_until(name, "WorkspaceReady", 900, NS)
    print(f"the adapter Workspace was ready {time.monotonic() - started:.0f} s after apply")
    pod = installed.get("pods", "-n", NS, "-l", f"kaito.sh/workspace={name}")["items"][0]
    init = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert init["adapter-0"]["state"]["terminated"]["exitCode"] == 0, init
    adapter_init = next(c for c in pod["spec"]["initContainers"] if c["name"] == "adapter-0")
    assert "--plain-http" in adapter_init["command"], adapter_init["command"]
    model = pod["spec"]["containers"][0]
    assert any(a.startswith("smollm2-tuned=") for a in model["command"]), model["command"]
    proxy = f"/api/v1/namespaces/{NS}/services/{name}:80/proxy"
    served = json.loads(installed.kubectl("get", "--raw", f"{proxy}/v1/models").stdout)
    ids = [m["id"] for m in served["data"]]
    assert any(i.endswith(":smollm2-tuned") for i in ids), ids
    body = json.dumps({"prompt": "What is the capital of France?",
                       "generate_kwargs": {"max_new_tokens": 24}})
    answer = installed.kubectl("create", "--raw", f"{proxy}/chat", "-f", "-", input=body,
                               timeout=300).stdout
    assert "Result" in answer, answer
    print(f"served {ids}; /chat with the tuned adapter: {answer.strip()[:200]}")
