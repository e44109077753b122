"""kaito-oci (the adapter puller of inference pods) and the strength it bakes in for vLLM.

vLLM loads a LoRA adapter at full strength, so the puller multiplies lora_B by the
Workspace's strength. The proof: the tiny model with the rescaled adapter at full strength
gives the same logits as the transformers server's own strength handling (peft's weighted
adapter, runtime.serving.loading.attach_adapters) with the original adapter, and clearly
different logits from the unscaled adapter. The registry is a real docker-registry.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from runtime.adapters.__main__ import main
from runtime.adapters.scale import is_lora_b, scale_adapter
from runtime.jobstep import TERMINATION_LOG_ENV, ConfigError, DataError
from runtime.netcheck import ALLOW_LOOPBACK_ENV
from runtime.serving.loading import attach_adapters
from runtime.serving.settings import AdapterSpec
from tests.runtime.conftest import PROMPT
from tests.support.registry import LocalRegistry


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {TERMINATION_LOG_ENV: str(tmp_path / "termination-log"), ALLOW_LOOPBACK_ENV: "1"}


def _logits(model_dir: Path, adapter: Path | None, strength: float | None = None) -> Any:
    """Next-token logits after PROMPT: no adapter, the adapter as peft loads it, or at a
    strength the way our transformers server applies it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None and strength is not None:
        model, _ = attach_adapters(model, (AdapterSpec(name="a", path=adapter, strength=strength),))
    elif adapter is not None:
        with warnings.catch_warnings():
            # peft 0.21 reads a property transformers 5 deprecated; `-W error` would raise.
            warnings.filterwarnings("ignore", ".is_gradient_checkpointing. is deprecated",
                                    FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True,
                                  return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


@pytest.mark.parametrize("strength", [0.5, 0.0])
def test_the_pulled_adapter_scaled_by_its_strength_equals_peft_at_that_strength(
    strength: float, tiny_model_dir: Path, adapter_dir: Path, oci_registry: LocalRegistry,
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ref = oci_registry.reference(f"adapters/scaled-{str(strength).replace('.', '-')}")
    secret = oci_registry.docker_config(tmp_path / "dockerconfig.json")
    assert main(["push", str(adapter_dir), ref, "--push-secret", str(secret), "--plain-http"],
                env) == 0
    dest = tmp_path / "adapters" / "fr"
    pull = ["pull", ref, str(dest), "--pull-secret", str(secret), "--plain-http"]
    assert main([*pull, "--scale", str(strength)], env) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["files"] == sorted(p.name for p in adapter_dir.iterdir())
    assert record["scaled_tensors"] > 0

    vllm_like = _logits(tiny_model_dir, dest)  # full strength, as --lora-modules loads it
    server = _logits(tiny_model_dir, adapter_dir, strength)  # our server's strength handling
    full = _logits(tiny_model_dir, adapter_dir)
    assert torch.allclose(vllm_like, server, atol=1e-5), (vllm_like - server).abs().max()
    assert (vllm_like - full).abs().max() > 0.1  # the strength really changes the output
    if strength == 0.0:
        assert torch.allclose(vllm_like, _logits(tiny_model_dir, None), atol=1e-5)


def test_a_pull_without_scale_is_byte_for_byte(
    adapter_dir: Path, oci_registry: LocalRegistry, env: dict[str, str], tmp_path: Path,
) -> None:
    ref = oci_registry.reference("adapters/unscaled")
    secret = oci_registry.docker_config(tmp_path / "dockerconfig.json")
    assert main(["push", str(adapter_dir), ref, "--push-secret", str(secret), "--plain-http"],
                env) == 0
    dest = tmp_path / "pulled"
    assert main(["pull", ref, str(dest), "--pull-secret", str(secret), "--plain-http"], env) == 0
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (dest / name).read_bytes() == (adapter_dir / name).read_bytes()


def _failure(argv: list[str], env: dict[str, str]) -> str:
    assert main(argv, env) == 1
    return Path(env[TERMINATION_LOG_ENV]).read_text()


def test_a_wrong_pull_secret_ends_with_the_registrys_answer_in_the_termination_log(
    oci_registry: LocalRegistry, env: dict[str, str], tmp_path: Path,
) -> None:
    ref = oci_registry.reference("adapters/private")
    secret = oci_registry.docker_config(tmp_path / "bad.json", password="wrong")
    text = _failure(["pull", ref, str(tmp_path / "d"), "--pull-secret", str(secret),
                     "--plain-http"], env)
    assert text == ("pull denied by registry: UNAUTHORIZED: authentication required "
                    f"(HTTP 401 from {oci_registry.host})\n")


def test_a_secret_without_the_registry_names_the_hosts_it_has(
    env: dict[str, str], tmp_path: Path,
) -> None:
    secret = tmp_path / "s.json"
    secret.write_text(json.dumps({"auths": {"other.example.com": {"auth": "dTpw"}}}))
    text = _failure(["pull", "127.0.0.1:9/a:v1", str(tmp_path / "d"), "--pull-secret",
                     str(secret)], env)
    assert text == ("registry error: registry secret has no credentials for 127.0.0.1:9; "
                    "it has: other.example.com\n")


def test_scaling_changes_only_lora_b_and_keeps_dtype_and_metadata(
    adapter_dir: Path, tmp_path: Path,
) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    copy = Path(shutil.copytree(adapter_dir, tmp_path / "a"))
    before = load_file(copy / "adapter_model.safetensors")
    count = scale_adapter(copy, 0.25)
    after = load_file(copy / "adapter_model.safetensors")
    assert count == sum(1 for k in before if is_lora_b(k)) > 0
    assert sorted(after) == sorted(before)
    for key, tensor in before.items():
        expected = tensor * 0.25 if is_lora_b(key) else tensor
        assert after[key].dtype == tensor.dtype
        assert torch.equal(after[key], expected), key
    weights = "adapter_model.safetensors"
    with (safe_open(str(copy / weights), framework="pt") as reader,
          safe_open(str(adapter_dir / weights), framework="pt") as orig):
        assert reader.metadata() == orig.metadata()
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in adapter_dir.iterdir())


@pytest.mark.parametrize(("config", "files", "message"), [
    pytest.param({"peft_type": "LORA", "use_dora": True}, True, "DoRA", id="dora"),
    pytest.param({"peft_type": "IA3"}, True, "only be applied to LoRA adapters, not IA3", id="ia3"),
    pytest.param({"peft_type": "LORA", "modules_to_save": ["lm_head"]}, True, "modules_to_save",
                 id="modules-to-save"),
    pytest.param({"peft_type": "LORA"}, False, "has no adapter_model.safetensors", id="bin-only"),
])
def test_adapters_the_rule_does_not_fit_are_refused_untouched(
    config: dict[str, Any], files: bool, message: str, adapter_dir: Path, tmp_path: Path,
) -> None:
    copy = Path(shutil.copytree(adapter_dir, tmp_path / "a"))
    (copy / "adapter_config.json").write_text(json.dumps(config))
    if not files:
        (copy / "adapter_model.safetensors").unlink()
    with pytest.raises(DataError, match=message):
        scale_adapter(copy, 0.5)
    if files:
        weights = "adapter_model.safetensors"
        assert (copy / weights).read_bytes() == (adapter_dir / weights).read_bytes()


def test_a_scale_that_is_not_a_finite_number_is_a_bad_config(
    adapter_dir: Path, env: dict[str, str],
) -> None:
    text = _failure(["pull", "127.0.0.1:9/a:v1", str(adapter_dir), "--scale", "nan"], env)
    assert text.startswith("registry error: cannot reach registry 127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"^bad config: --scale nan must be a finite number$"):
        scale_adapter(adapter_dir, float("nan"))
