"""The seed's phi-3 QLoRA tuning example trains with base weights from the Hub stand-in.

The train and push commands are the ones the reconciler puts into the tuning Job (only the
mount paths become temp folders, and the local registry needs --plain-http); the base model
is a tiny checkpoint of phi-3's own architecture (Phi3ForCausalLM, fused qkv_proj /
gate_up_proj, the catalog's LoRA targets) served as microsoft/Phi-3-mini-4k-instruct at the
catalog's pinned revision. The adapter must arrive in the registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from crds.workspace import parse_workspace
from presets.catalog import load_catalog
from presets.expand import expand_object, resolve
from reconciler import tuning as job
from reconciler.objects import desired_objects
from rig.hubstub import running_hub
from rig.seeds import SEED_DIR
from runtime.adapters import oci
from runtime.netcheck import ALLOW_LOOPBACK_ENV, Policy
from tests.support.registry import LocalRegistry
from tests.support.tinyarch import build_tiny_like

REPO = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()
ROW = {"messages": [{"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": "Paris is the capital."}]}


def _job_commands(registry: LocalRegistry) -> tuple[dict[str, Any], list[str], list[str]]:
    """The seed example (output to the local registry) and its Job's train / push commands."""
    obj = yaml.safe_load((SEED_DIR / "phi-3-tuning.yaml").read_text())
    obj["apiVersion"] = "kaito.sh/v1beta1"
    obj["metadata"]["namespace"] = "default"
    obj["tuning"]["output"] = {"image": registry.reference("adapters/phi-3-qlora"),
                               "imagePushSecret": "push-secret"}
    expanded = expand_object(obj, CATALOG)
    ws = parse_workspace(expanded)
    built = desired_objects(ws, resolve(ws, CATALOG), ["node-1"], settings={})
    pod = next(o for o in built if o["kind"] == "Job")["spec"]["template"]["spec"]
    train = next(c for c in pod["initContainers"] if c["name"] == "train")["command"]
    push = next(c for c in pod["containers"] if c["name"] == "push")["command"]
    return obj, train, push


def _local(argv: list[str], paths: dict[str, Path]) -> list[str]:
    out = []
    for arg in argv:
        for mount, local in paths.items():
            if arg == mount or arg.startswith(mount + "/"):
                arg = str(local) + arg[len(mount) :]
        out.append(arg)
    return out


@pytest.mark.slow
def test_the_phi3_qlora_example_trains_on_hub_weights_and_pushes_its_adapter(
    tiny_model_dir: Path, oci_registry: LocalRegistry, tmp_path: Path
) -> None:
    obj, train, push = _job_commands(oci_registry)
    spec = CATALOG.model(obj["tuning"]["preset"]["name"])
    assert spec is not None
    assert spec.family == "phi3"
    assert spec.revision is not None
    assert train[3:8] == ["train", "--model", spec.hf_id, "--revision", spec.revision]
    assert obj["tuning"]["method"] == "qlora"

    repo = build_tiny_like(spec.family, tmp_path / "repo", tokenizer_dir=tiny_model_dir,
                           context_length=spec.context_length)
    paths = {job.DATA_DIR: tmp_path / "data", job.ADAPTER_DIR: tmp_path / "adapter",
             job.WORK_DIR: tmp_path / "work",
             f"{job.PUSH_AUTH_DIR}/{job.DOCKER_CONFIG_KEY}": tmp_path / "push.json"}
    paths[job.DATA_DIR].mkdir()
    (paths[job.DATA_DIR] / "train.jsonl").write_text((json.dumps(ROW) + "\n") * 8)
    oci_registry.docker_config(tmp_path / "push.json")
    with running_hub() as hub:
        hub.add_repo(spec.hf_id, repo, commit=spec.revision)
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint,
               "KAITO_WEIGHTS_CACHE": str(tmp_path / "node-cache"),
               "KAITO_TERMINATION_LOG": str(tmp_path / "termination-log"),
               ALLOW_LOOPBACK_ENV: "1"}  # the registry is on 127.0.0.1
        trained = subprocess.run([sys.executable, *_local(train, paths)[1:]], cwd=REPO,
                                 env=env, capture_output=True, text=True, timeout=600,
                                 check=False)
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert any(r.path.startswith("/_cdn/") for r in hub.downloads())
    events = [json.loads(line) for line in trained.stdout.splitlines() if line.startswith("{")]
    assert [e for e in events if e["event"] == "done"]
    assert f"downloading from {hub.endpoint}" in trained.stderr

    pushed = subprocess.run([sys.executable, *_local(push, paths)[1:], "--plain-http"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    back = tmp_path / "pulled"
    oci.pull_directory(obj["tuning"]["output"]["image"], back, plain_http=True,
                       credentials=oci.Credentials(oci_registry.username, oci_registry.password),
                       policy=Policy(allow_loopback=True))
    config = json.loads((back / "adapter_config.json").read_text())
    # phi-3's own fused projections (a Llama-shaped stand-in would have q_proj / v_proj)
    assert config["target_modules"]
    assert set(config["target_modules"]) <= set(spec.lora_target_modules)
