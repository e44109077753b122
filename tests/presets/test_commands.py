"""The pod commands the reconciler gets from presets/commands.py, pinned by golden files.

Each case is a terse Workspace expanded with the shipped catalog, so the command reflects
the real GPU fit (tensor / pipeline parallel sizes) and max-model-len annotation.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crds.workspace import parse_workspace
from presets.catalog import load_catalog
from presets.commands import CommandError, inference_command, vllm_arguments
from presets.expand import expand_object, resolve
from tests.support.golden import check_golden

GOLDEN = Path(__file__).parent / "golden_commands"
CATALOG = load_catalog()


def workspace(
    preset: str,
    sku: str,
    *,
    adapters: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    inference: dict[str, Any] = {"preset": {"name": preset}}
    if adapters:
        inference["adapters"] = adapters
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default", "annotations": annotations or {}},
        "resource": {"instanceType": sku, "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": inference,
    }


def command_for(obj: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    ws = parse_workspace(expand_object(obj, CATALOG))
    return inference_command(ws, resolve(ws, CATALOG), config=config)


ADAPTER: list[dict[str, Any]] = [
    {"source": {"name": "french", "image": "reg/fr:1"}, "strength": "0.5"},
    {"source": {"name": "style", "image": "reg/st:1"}},
]

CASES = [
    pytest.param(
        workspace("phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4"),
        None,
        id="phi-3-mini-on-one-a100",
    ),
    pytest.param(
        workspace("phi-3-mini-4k-instruct", "Standard_NC6s_v3"), None, id="phi-3-mini-on-v100-seed"
    ),
    pytest.param(
        workspace("llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4"),
        None,
        id="llama-70b-two-gpus-multi-node",
    ),
    pytest.param(
        workspace(
            "qwen2.5-coder-32b-instruct",
            "Standard_NC96ads_A100_v4",
            adapters=[{"source": {"name": "sql"}}],
        ),
        None,
        id="qwen-32b-four-gpus-with-lora",
    ),
    pytest.param(
        workspace("phi-4", "Standard_NC24ads_A100_v4"),
        {
            "max-model-len": 8192,
            "gpu_memory_utilization": 0.95,
            "enforce-eager": True,
            "dtype": None,
            "port": 1,
        },
        id="phi-4-user-config-wins",
    ),
    pytest.param(
        workspace("smollm2-135m-instruct", "Standard_D4s_v3"), None, id="smollm2-135m-cpu"
    ),
    pytest.param(  # vLLM's CPU build (catalog vllmOnCpu), weights from a model artifact
        workspace("smollm2-135m-instruct", "Standard_D4s_v3", annotations={
            "kaito.sh/runtime": "vllm",
            "kaito.sh/model-artifact": "registry.example.com/models/smollm2-135m:1"}),
        None,
        id="smollm2-135m-vllm-cpu",
    ),
    pytest.param(
        workspace("smollm2-360m-instruct", "Standard_D8s_v3", adapters=ADAPTER),
        None,
        id="smollm2-360m-cpu-adapters",
    ),
    pytest.param(
        workspace(
            "phi-3-mini-4k-instruct",
            "Standard_NC24ads_A100_v4",
            annotations={"kaito.sh/runtime": "transformers"},
        ),
        None,
        id="phi-3-mini-transformers-runtime",
    ),
    pytest.param(
        workspace("deepseek-r1-0528", "Standard_NC80adis_H100_v5"),
        None,
        id="deepseek-r1-fp8-mla-multi-node",
    ),
    pytest.param(
        workspace("ministral-3-8b-instruct", "Standard_NC24ads_A100_v4"),
        None,
        id="ministral-3-8b-mistral-formats",
    ),
    pytest.param(
        workspace("gpt-oss-20b", "Standard_NC24ads_A100_v4"), None, id="gpt-oss-20b-mxfp4"
    ),
    pytest.param(  # fits one GPU with room to batch: one engine per GPU, one endpoint
        workspace("phi-3-mini-4k-instruct", "Standard_NC96ads_A100_v4"),
        None,
        id="phi-3-mini-data-parallel-on-four-a100",
    ),
    pytest.param(  # a 128k model on an 80 GiB GPU keeps its whole context
        workspace("phi-3-mini-128k-instruct", "Standard_NC24ads_A100_v4"),
        None,
        id="phi-3-mini-128k-full-context-on-one-a100",
    ),
    pytest.param(
        workspace(
            "phi-3-mini-4k-instruct",
            "Standard_NC24ads_A100_v4",
            annotations={"kaito.sh/performance-mode": "throughput"},
        ),
        None,
        id="phi-3-mini-throughput-mode",
    ),
]

# The representative SKU set the catalog's command lines are pinned (and parsed) on: one,
# two, four and eight GPUs of the common kinds, both clouds with GPU entries in the catalog.
REPRESENTATIVE_SKUS = (
    "Standard_NV36ads_A10_v5",
    "Standard_NC24ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_NC80adis_H100_v5",
    "Standard_ND96isr_H100_v5",
    "g5.12xlarge",
)


def catalog_commands() -> dict[str, list[str]]:
    """`PRESET on SKU` -> the vLLM command line, for every vLLM preset on every
    representative SKU it fits (at the node count the GPU fit computes)."""
    out: dict[str, list[str]] = {}
    for name in sorted(CATALOG.models):
        model = CATALOG.models[name]
        if model.runtime != "vllm" or model.deprecated:
            continue
        for sku in REPRESENTATIVE_SKUS:
            obj = workspace(name, sku)
            if model.access == "private":
                obj["inference"]["preset"]["presetOptions"] = {"image": "registry.example.com/w:1"}
            expanded = expand_object(obj, CATALOG)
            if expanded["resource"].get("count") is None:
                continue  # does not fit that SKU
            ws = parse_workspace(expanded)
            out[f"{name} on {sku}"] = inference_command(ws, resolve(ws, CATALOG))
    return out


def test_private_presets_load_the_weights_from_the_users_image() -> None:
    obj = workspace("llama-2-7b-chat", "Standard_NC24ads_A100_v4")
    obj["inference"]["preset"]["presetOptions"] = {"image": "registry.example.com/llama:1"}
    args = command_for(obj)
    assert args[args.index("--model") + 1] == "/workspace/tfs/weights"


def test_quantized_checkpoints_let_vllm_read_their_dtype() -> None:
    for preset in ("deepseek-r1-0528", "gpt-oss-20b", "ministral-3-8b-instruct"):
        args = command_for(workspace(preset, "Standard_NC80adis_H100_v5"))
        assert args[args.index("--dtype") + 1] == "auto", preset


def test_vllm_on_a_cpu_node_runs_float32_from_the_cpu_image() -> None:
    obj = workspace("smollm2-135m-instruct", "Standard_D4s_v3",
                    annotations={"kaito.sh/runtime": "vllm"})
    ws = parse_workspace(expand_object(obj, CATALOG))
    resolved = resolve(ws, CATALOG)
    assert resolved.image == CATALOG.images["vllm-cpu"]
    args = inference_command(ws, resolved)
    assert args[args.index("--dtype") + 1] == "float32"
    assert "--gpu-memory-utilization" not in args  # VLLM_CPU_KVCACHE_SPACE sizes it on CPU
    gpu = command_for(workspace("phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4"))
    assert gpu[gpu.index("--dtype") + 1] == "bfloat16"
    assert "--gpu-memory-utilization" in gpu


@pytest.mark.parametrize(("obj", "config"), CASES)
def test_inference_commands_match_golden(
    obj: dict[str, Any],
    config: dict[str, Any] | None,
    update_golden: bool,
    request: pytest.FixtureRequest,
) -> None:
    name = request.node.callspec.id
    check_golden(GOLDEN / f"{name}.yaml", command_for(obj, config), update=update_golden)


def test_the_catalog_command_lines_match_golden(update_golden: bool) -> None:
    commands = catalog_commands()
    assert len(commands) > 100
    check_golden(GOLDEN / "catalog.yaml", commands, update=update_golden)


def test_a_small_model_on_four_gpus_runs_one_engine_per_gpu() -> None:
    cmd = command_for(workspace("phi-3-mini-4k-instruct", "Standard_NC96ads_A100_v4"))
    args = cmd[cmd.index("--") + 1 :]
    assert args[args.index("--data-parallel-size") + 1] == "4"
    assert args[args.index("--tensor-parallel-size") + 1] == "1"
    assert "--distributed-executor-backend" not in args


def test_user_config_wins_key_by_key_and_cannot_move_the_port() -> None:
    obj = workspace("phi-4", "Standard_NC24ads_A100_v4")
    cmd = command_for(obj, {"max_model_len": 1024, "port": 9, "enable-prefix-caching": True})
    assert cmd[cmd.index("--max-model-len") + 1] == "1024"
    assert cmd.count("--max-model-len") == 1
    assert cmd[cmd.index("--port") + 1] == "5000"
    assert "--enable-prefix-caching" in cmd
    assert "9" not in cmd


def test_multi_node_uses_pipeline_parallel_over_ray() -> None:
    cmd = command_for(workspace("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4"))
    args = cmd[cmd.index("--") + 1 :]
    pp = int(args[args.index("--pipeline-parallel-size") + 1])
    assert pp > 1
    assert args[args.index("--distributed-executor-backend") + 1] == "ray"


def test_a_bad_strength_is_a_clear_error() -> None:
    obj = workspace(
        "smollm2-135m-instruct",
        "Standard_D4s_v3",
        adapters=[{"source": {"name": "a"}, "strength": "lots"}],
    )
    ws = parse_workspace(expand_object(obj, CATALOG))
    with pytest.raises(CommandError, match=r"adapters\[0\]\.strength 'lots' is not a number"):
        inference_command(ws, resolve(ws, CATALOG))


def test_a_workspace_without_a_preset_has_no_preset_command() -> None:
    obj = workspace("phi-4", "Standard_NC24ads_A100_v4")
    obj["inference"] = {"template": {"spec": {"containers": []}}}
    ws = parse_workspace(obj)
    with pytest.raises(CommandError, match=r"preset\.name is required"):
        vllm_arguments(ws, resolve(ws, CATALOG))


def test_the_commands_module_imports_no_torch() -> None:
    code = (
        "import sys, presets.commands; "
        "bad = [m for m in ('torch', 'transformers', 'peft', 'runtime') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
