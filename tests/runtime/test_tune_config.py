"""The tuning config: Kaito's sections merged key by key over runtime/tuning/defaults.yaml."""

from __future__ import annotations

import pytest

from runtime.jobstep import ConfigError
from runtime.tuning.config import (
    SCHEMA,
    build_config,
    check_sections,
    layered_defaults,
    load_defaults,
    merge,
)

# A ConfigMap body in Kaito's shape: every section Kaito's QLoRA template uses.
KAITO_STYLE = """
training_config:
  ModelConfig:
    torch_dtype: "bfloat16"
    local_files_only: true
    device_map: "auto"
  QuantizationConfig:
    load_in_4bit: true
    bnb_4bit_quant_type: "nf4"
    bnb_4bit_compute_dtype: "bfloat16"
    bnb_4bit_use_double_quant: true
  LoraConfig:
    r: 8
    lora_alpha: 8
    lora_dropout: 0.0
  TrainingArguments:
    output_dir: "/mnt/results"
    ddp_find_unused_parameters: false
    save_strategy: "epoch"
    per_device_train_batch_size: 1
  DataCollator:
    mlm: true
  DatasetConfig:
    shuffle_dataset: true
    train_test_split: 1
"""


@pytest.fixture(scope="module")
def defaults() -> dict[str, object]:
    return load_defaults()


def test_a_kaito_style_configmap_is_accepted_and_wins_over_defaults(
    defaults: dict[str, object],
) -> None:
    config = build_config(KAITO_STYLE, method="qlora", family="llama", defaults=defaults)
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 8.0, 0.0)
    assert config.torch_dtype == "bfloat16"
    assert (config.load_in_4bit, config.quant_type, config.double_quant) == (True, "nf4", True)
    assert config.save_strategy == "epoch"
    assert config.mlm is True
    assert "TrainingArguments.output_dir" in config.ignored_keys
    # Keys the user left out come from the defaults (family, then common).
    assert config.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert config.max_length == 512


def test_user_values_override_key_by_key_not_section_by_section(
    defaults: dict[str, object],
) -> None:
    config = build_config(
        "LoraConfig: {r: 32}\nTrainingArguments: {max_steps: 7}",
        method="lora",
        family="phi3",
        defaults=defaults,
    )
    assert config.lora_r == 32
    assert config.lora_alpha == 16.0  # common default kept
    assert config.target_modules == ("qkv_proj", "o_proj")  # family default kept
    assert config.max_steps == 7
    assert config.learning_rate == 0.0002


def test_an_empty_config_gives_the_defaults_of_the_method(defaults: dict[str, object]) -> None:
    lora = build_config("", method="lora", family=None, defaults=defaults)
    qlora = build_config("", method="qlora", family=None, defaults=defaults)
    assert (lora.load_in_4bit, qlora.load_in_4bit) == (False, True)
    assert lora.target_modules == "all-linear"


def test_unknown_sections_and_keys_are_all_reported_with_the_allowed_names(
    defaults: dict[str, object],
) -> None:
    text = "Lora: {r: 4}\nLoraConfig: {rank: 4, r: -1}\n"
    with pytest.raises(ConfigError) as info:
        build_config(text, method="lora", family=None, defaults=defaults)
    message = str(info.value)
    assert message.startswith("bad config: ")
    assert "unknown section 'Lora'; allowed sections: ModelConfig, TokenizerParams" in message
    assert "unknown key LoraConfig.rank; allowed in LoraConfig: bias, lora_alpha" in message
    assert "LoraConfig.r must be an integer >= 1, got -1" in message


@pytest.mark.parametrize(
    ("method", "quantization", "fragment"),
    [
        pytest.param("lora", "load_in_4bit: true", "must not quantize", id="lora-quantized"),
        pytest.param("qlora", "load_in_4bit: false", "needs QuantizationConfig", id="qlora-plain"),
        pytest.param(
            "qlora", "{load_in_4bit: true, load_in_8bit: true}", "cannot set both", id="both"
        ),
        pytest.param(
            "qlora", "{load_in_4bit: false, load_in_8bit: true}", "8bit is not supported", id="8bit"
        ),
    ],
)
def test_method_and_quantization_must_agree(
    defaults: dict[str, object], method: str, quantization: str, fragment: str
) -> None:
    body = quantization if quantization.startswith("{") else "{" + quantization + "}"
    with pytest.raises(ConfigError, match=fragment):
        build_config(f"QuantizationConfig: {body}", method=method, family=None, defaults=defaults)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[1, 2]", id="a-list"),
        pytest.param("LoraConfig: [r]", id="section-not-a-mapping"),
        pytest.param("a: b: c", id="invalid-yaml"),
        pytest.param("ModelConfig: {trust_remote_code: true}", id="remote-code"),
    ],
)
def test_malformed_configs_fail_with_a_config_error(defaults: dict[str, object], text: str) -> None:
    with pytest.raises(ConfigError):
        build_config(text, method="lora", family=None, defaults=defaults)


def test_an_unknown_method_is_refused(defaults: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="unknown method 'full'; allowed: lora, qlora"):
        layered_defaults(defaults, "full", None)


def test_the_shipped_defaults_are_valid_for_every_method_and_family(
    defaults: dict[str, object],
) -> None:
    families = list(defaults["families"])  # type: ignore[call-overload]
    assert "llama" in families
    for method in ("lora", "qlora"):
        for family in [None, *families]:
            merged = layered_defaults(defaults, method, family)
            assert check_sections(merged) == []
            assert set(merged) <= set(SCHEMA)


def test_merge_leaves_its_inputs_unchanged() -> None:
    base = {"LoraConfig": {"r": 8, "lora_alpha": 16}}
    over = {"LoraConfig": {"r": 4}}
    assert merge(base, over) == {"LoraConfig": {"r": 4, "lora_alpha": 16}}
    assert base == {"LoraConfig": {"r": 8, "lora_alpha": 16}}
