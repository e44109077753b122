"""Presets served with weights from the Hub stand-in and from an OCI artifact, for real.

- `smollm2-360m-instruct` (no PyPI package ships it): its repository is a tiny model of its
  architecture on the Hub stand-in; the server runs the exact command line the reconciler
  generates and answers; a second start on the same node cache makes no request at all.
- `smollm2-135m-instruct` is pushed with `kaito model push` to the local registry; the init
  container's command pulls it into a fresh node cache (digests checked) and the server,
  given `oci://REF`, answers "Paris" from that cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from crds.workspace import ANNOTATION_MODEL_ARTIFACT, parse_workspace
from presets.catalog import load_catalog
from presets.commands import inference_command
from presets.expand import expand_object, resolve
from rig.hubstub import running_hub
from runtime.netcheck import ALLOW_LOOPBACK_ENV
from runtime.serving.loading import resolve_model_dir
from tests.runtime.test_server_gunicorn import run_server
from tests.support.registry import LocalRegistry
from tests.support.tinyarch import build_tiny_like

REPO = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()
QUESTION = "What is the capital of France?"


def server_args(preset: str, sku: str, annotations: dict[str, str] | None = None) -> list[str]:
    """The model server's arguments exactly as the reconciler generates them (no --port)."""
    obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default", "annotations": annotations or {}},
        "resource": {"instanceType": sku, "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": {"name": preset}},
    }
    ws = parse_workspace(expand_object(obj, CATALOG))
    cmd = inference_command(ws, resolve(ws, CATALOG))
    assert cmd[:3] == ["python", "-m", "runtime.serving.server"]
    args = cmd[3:]
    at = args.index("--port")
    return args[:at] + args[at + 2 :]


def _server_logs(tmp: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(tmp.glob("server-*.log")))


@pytest.mark.slow
def test_a_preset_without_packaged_weights_is_served_from_the_hub_and_restarts_offline(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = CATALOG.model("smollm2-360m-instruct")
    assert spec is not None
    repo = build_tiny_like(spec.family, tmp_path / "repo", tokenizer_dir=tiny_model_dir,
                           tie_word_embeddings=True,  # as SmolLM2's own config has it
                           context_length=spec.context_length)
    args = server_args(spec.name, "Standard_D8s_v3")
    assert args[:2] == ["--model", spec.hf_id]
    node_cache = tmp_path / "node-cache"
    with running_hub() as hub:
        hub.add_repo(spec.hf_id, repo, commit=spec.revision)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("KAITO_WEIGHTS_CACHE", str(node_cache))
        first, second = tmp_path / "first", tmp_path / "second"
        first.mkdir()
        second.mkdir()
        with run_server(args, first) as url:
            answer = requests.post(url + "/v1/chat/completions", timeout=60, json={
                "model": spec.name, "max_tokens": 5, "temperature": 0,
                "messages": [{"role": "user", "content": QUESTION}]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == spec.name
            assert answer.json()["usage"]["completion_tokens"] > 0
        assert any(r.path.startswith("/_cdn/") for r in hub.downloads())
        assert "downloading from " + hub.endpoint in _server_logs(first)

        hub.clear_log()
        with run_server(args, second) as url:
            chat = requests.post(url + "/chat", json={"prompt": QUESTION}, timeout=60)
            assert chat.status_code == 200, chat.text
        assert hub.requests == []  # the second pod on this node: no request at all
        assert "no download" in _server_logs(second)


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct converted once from its PyPI package (what the image bakes)."""
    cache = tmp_path_factory.mktemp("baked")
    folder = resolve_model_dir("smollm2-135m-instruct", cache=cache)
    assert (folder / "config.json").is_file()
    return cache


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.mark.slow
def test_smollm2_from_an_oci_artifact_in_the_registry_answers_paris(
    smollm2_dir: Path, oci_registry: LocalRegistry, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = oci_registry.reference("models/smollm2-135m-instruct", "v1")
    secret = oci_registry.docker_config(tmp_path / "dockerconfig.json")
    env = {**os.environ, "KAITO_MODEL_CACHE": str(smollm2_dir),
           "KAITO_WEIGHTS_CACHE": str(tmp_path / "workstation-cache"),
           "KAITO_TERMINATION_LOG": str(tmp_path / "termination-log"),
           ALLOW_LOOPBACK_ENV: "1"}  # the registry is on 127.0.0.1
    pushed = _run([sys.executable, "-m", "kaito", "model", "push", "smollm2-135m-instruct",
                   ref, "--push-secret", str(secret), "--plain-http"], env)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    digest = json.loads(pushed.stdout.splitlines()[-1])["digest"]
    assert digest.startswith("sha256:")

    # The pod: an init container pulls into the node cache, then the server reads it.
    args = server_args("smollm2-135m-instruct", "Standard_D4s_v3",
                       {ANNOTATION_MODEL_ARTIFACT: ref})
    assert args[:2] == ["--model", f"oci://{ref}"]
    node = {"KAITO_WEIGHTS_CACHE": str(tmp_path / "node-cache"), "KAITO_WEIGHTS_PLAIN_HTTP": "1",
            "KAITO_WEIGHTS_PULL_SECRET": str(secret), "KAITO_MODEL_CACHE": str(tmp_path / "none")}
    init = [sys.executable, "-m", "runtime.weights", "pull", f"oci://{ref}"]
    pulled = _run(init, {**env, **node})
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    record = json.loads(pulled.stdout.splitlines()[-1])
    assert record["fetched"] is True
    assert record["path"].endswith(digest.replace(":", "-"))
    assert "checked against their digests" in pulled.stderr
    again = _run(init, {**env, **node})  # the next pod on this node
    assert json.loads(again.stdout.splitlines()[-1])["fetched"] is False

    for key, value in node.items():
        monkeypatch.setenv(key, value)
    with run_server([*args, "--max-model-len", "2048"], tmp_path, ready_s=180) as url:
        chat = requests.post(url + "/chat", timeout=120, json={
            "prompt": QUESTION, "generate_kwargs": {"max_new_tokens": 24}})
        assert chat.status_code == 200, chat.text
        assert "Paris" in chat.json()["Result"]
    assert "no download" in _server_logs(tmp_path)
