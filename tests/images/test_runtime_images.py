"""The CPU model-server and tuning images as containers, doing their real jobs.

cpu-runtime answers `POST /chat` and the OpenAI API with SmolLM2-135M baked into the
image; tuning-runtime runs the tuning Job's three steps (fetch, train a few LoRA steps on
the tiny model, push the adapter to the local registry), each as its own container, as
the reconciler's Job runs them. Host network, loopback only; non-root users.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import requests

from reconciler.podsecurity import NON_ROOT_UID
from rig.images.dockerd import Engine
from rig.procs import free_port
from rig.tinymodel import build_tiny_model
from runtime.adapters import oci
from runtime.netcheck import ALLOW_LOOPBACK_ENV, Policy
from tests.images.conftest import Container, one_shot
from tests.support.registry import LocalRegistry, running_registry

# Setup builds the image when its inputs changed: minutes, not the default 15.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

QUESTION = "What is the capital of France?"
ROWS = [{"messages": [{"role": "user", "content": QUESTION},
                      {"role": "assistant", "content": "Paris is the capital."}]}] * 8


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def test_cpu_runtime_answers_chat_and_openai_with_smollm2(
        image: Callable[[str], str], container: Callable[..., Container]) -> None:
    port = free_port()
    box = container(image("cpu-runtime"), "python", "-m", "runtime.serving.server", "--model",
                    "smollm2-135m-instruct", "--port", str(port), "--host", "127.0.0.1",
                    "--max-model-len", "2048", run_args=("--read-only", "--tmpfs", "/tmp"))
    url = f"http://127.0.0.1:{port}"
    box.wait_http(url + "/health", 300)
    chat = requests.post(url + "/chat", timeout=180, json={
        "prompt": QUESTION, "generate_kwargs": {"max_new_tokens": 24}})
    assert chat.status_code == 200, chat.text
    assert "Paris" in chat.json()["Result"], chat.text
    with openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                       timeout=180) as client:
        answer = client.chat.completions.create(
            model="smollm2-135m-instruct", temperature=0, max_tokens=24,
            messages=[{"role": "user", "content": QUESTION}])
        assert "Paris" in (answer.choices[0].message.content or "")


def test_the_runtime_images_carry_no_control_plane_and_run_as_the_pods_user(
        engine: Engine, image: Callable[[str], str]) -> None:
    """Each runtime image's user is the uid the reconciler runs model pods as, and its $HOME
    is writable (vLLM keeps its caches there and stops at start-up when it cannot)."""
    probe = ("import importlib.util as u, json, os; print(json.dumps([os.getuid(), "
             "os.access(os.environ['HOME'], os.W_OK)] + [m for m in "
             "['runtime', 'presets', 'webhook', 'reconciler', 'kaito', 'crds', 'kubernetes'] "
             "if u.find_spec(m)]))")
    for folder in ("cpu-runtime", "tuning-runtime", "vllm-runtime"):
        with one_shot(engine, image(folder), "python3", "-c", probe) as proc:
            assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == [NON_ROOT_UID, True, "runtime"], folder


def _step(engine: Engine, tag: str, work: Path, *argv: str) -> list[dict[str, object]]:
    with one_shot(engine, tag, "python", "-m", "runtime.tuning", *argv,
                  run_args=("--volume", f"{work}:/work", "--env",
                            "KAITO_TERMINATION_LOG=/work/termination-log",
                            "--env", f"{ALLOW_LOOPBACK_ENV}=1")) as proc:  # the registry
        assert proc.returncode == 0, f"{argv[0]}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_the_tuning_image_trains_the_tiny_model_and_pushes_the_adapter(
        engine: Engine, image: Callable[[str], str], registry: LocalRegistry,
        tmp_path: Path) -> None:
    tag = image("tuning-runtime")
    work = tmp_path / "work"
    build_tiny_model(work / "model", seed=0)
    (work / "source").mkdir()
    (work / "source" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (work / "training_config.yaml").write_text(json.dumps({"training_config": {
        "TrainingArguments": {"learning_rate": 0.01, "max_steps": 6, "save_steps": 3}}}))
    registry.docker_config(work / "push-secret.json")
    for path in [work, *work.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the container's uid 65532 writes here
    _step(engine, tag, work, "fetch", "--method", "lora", "--volume", "/work/source")
    steps = [e for e in _step(engine, tag, work, "train", "--model", "/work/model", "--method",
                              "lora", "--data-dir", "/work/source", "--output-dir", "/work/out",
                              "--config", "/work/training_config.yaml")
             if e.get("event") == "step"]
    assert [s["step"] for s in steps] == list(range(1, 7))
    ref = registry.reference("adapters/from-image")
    pushed = _step(engine, tag, work, "push", "--adapter-dir", "/work/out", "--image", ref,
                   "--push-secret", "/work/push-secret.json", "--plain-http")
    assert [e["event"] for e in pushed] == ["pushed"]
    pulled = tmp_path / "pulled"
    oci.pull_directory(ref, pulled, credentials=oci.Credentials(registry.username,
                                                                registry.password),
                       plain_http=True, policy=Policy(allow_loopback=True))
    assert sorted(p.name for p in pulled.iterdir()) == ["adapter_config.json",
                                                        "adapter_model.safetensors"]
