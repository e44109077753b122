"""The tuning job's configuration: Kaito's `training_config.yaml` merged over our defaults.

Why: a Workspace's `tuning.config` ConfigMap (key `training_config.yaml`) is written in
Kaito's format, with the sections ModelConfig, TokenizerParams, QuantizationConfig,
LoraConfig, TrainingArguments, DataCollator and DatasetConfig, optionally under a top-level
`training_config:` key. Users' ConfigMaps must keep working, so the section names are the
same; values are merged KEY BY KEY over the defaults in `runtime/tuning/defaults.yaml` (common, then
the method, then the model family). Unknown sections or keys, wrong types and
contradictions are all reported at once, naming the allowed keys.

This module is pure: it parses text and data and returns a frozen `TuneConfig`; it must not
import torch, read the environment, or touch the network.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runtime.jobstep import ConfigError

DEFAULTS_FILE = Path(__file__).resolve().parent / "defaults.yaml"
METHODS = ("lora", "qlora")
DTYPES = ("float32", "bfloat16", "float16", "auto")
Check = Callable[[Any], bool]


def _int(minimum: int) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _num(low: float, high: float) -> Check:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and low <= v <= high


def _one_of(*values: str) -> Check:
    return lambda v: isinstance(v, str) and v in values


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _modules(v: Any) -> bool:
    return _str(v) or (isinstance(v, list) and bool(v) and all(_str(x) for x in v))


def _any(v: Any) -> bool:
    return True


# section -> key -> (check, what the value must be). Keys marked IGNORED are accepted so
# that Kaito ConfigMaps keep working, but have no effect on this runtime.
IGNORED = "accepted for Kaito compatibility; no effect here"
SCHEMA: dict[str, dict[str, tuple[Check, str]]] = {
    "ModelConfig": {
        "torch_dtype": (_one_of(*DTYPES), f"one of {', '.join(DTYPES)}"),
        "chat_template": (_str, "a Jinja chat template or a file path"),
        "trust_remote_code": (lambda v: v is False, "false (remote code is never run)"),
        "local_files_only": (_bool, IGNORED),
        "device_map": (_any, IGNORED),
        "pretrained_model_name_or_path": (_any, IGNORED),
        "revision": (_any, IGNORED),
    },
    "TokenizerParams": {
        "max_length": (_int(8), "an integer >= 8 (tokens)"),
        "truncation": (_bool, "a boolean"),
        "padding": (_any, IGNORED),
    },
    "QuantizationConfig": {
        "load_in_4bit": (_bool, "a boolean"),
        "load_in_8bit": (_bool, "a boolean"),
        "bnb_4bit_quant_type": (_one_of("nf4", "fp4"), "nf4 or fp4"),
        "bnb_4bit_compute_dtype": (_one_of("float32", "bfloat16", "float16"), "a float dtype"),
        "bnb_4bit_use_double_quant": (_bool, "a boolean"),
        "quant_method": (_one_of("bitsandbytes"), "bitsandbytes"),
    },
    "LoraConfig": {
        "r": (_int(1), "an integer >= 1"),
        "lora_alpha": (_num(0, 1e6), "a number >= 0"),
        "lora_dropout": (_num(0, 1), "a number in [0, 1]"),
        "target_modules": (_modules, "a module name, a list of names, or all-linear"),
        "bias": (_one_of("none", "all", "lora_only"), "none, all or lora_only"),
        "use_rslora": (_bool, "a boolean"),
        "task_type": (_one_of("CAUSAL_LM"), "CAUSAL_LM"),
    },
    "TrainingArguments": {
        "num_train_epochs": (_num(0.01, 1e4), "a number > 0"),
        "max_steps": (_int(-1), "an integer (-1: use num_train_epochs)"),
        "per_device_train_batch_size": (_int(1), "an integer >= 1"),
        "gradient_accumulation_steps": (_int(1), "an integer >= 1"),
        "learning_rate": (_num(0, 10), "a number in [0, 10]"),
        "lr_scheduler_type": (
            _one_of("linear", "cosine", "constant"),
            "linear, cosine or constant",
        ),
        "warmup_steps": (_int(0), "an integer >= 0"),
        "weight_decay": (_num(0, 10), "a number >= 0"),
        "max_grad_norm": (_num(0, 1e6), "a number >= 0 (0 disables clipping)"),
        "logging_steps": (_int(1), "an integer >= 1"),
        "save_steps": (_int(1), "an integer >= 1"),
        "save_strategy": (_one_of("steps", "epoch", "no"), "steps, epoch or no"),
        "save_total_limit": (_int(1), "an integer >= 1"),
        "seed": (_int(0), "an integer >= 0"),
        "output_dir": (_str, IGNORED),
        "auto_find_batch_size": (_bool, IGNORED),
        "ddp_find_unused_parameters": (_bool, IGNORED),
        "gradient_checkpointing": (lambda v: v is False, "false (not used on this runtime)"),
    },
    "DataCollator": {
        "mlm": (_bool, "a boolean; causal LM training never masks input tokens"),
        "pad_to_multiple_of": (_any, IGNORED),
    },
    "DatasetConfig": {
        "shuffle_dataset": (_bool, "a boolean"),
        "shuffle_seed": (_int(0), "an integer >= 0"),
        "messages_column": (_str, "a column name"),
        "context_column": (_str, "a column name (the prompt)"),
        "response_column": (_str, "a column name (the completion)"),
        "train_test_split": (_num(0.01, 1), "a fraction in (0, 1]"),
        "dataset_path": (_any, IGNORED),
        "dataset_extension": (_any, IGNORED),
    },
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneConfig:
    """Everything the trainer needs, with every default applied."""

    method: str
    torch_dtype: str
    chat_template: str | None
    max_length: int
    truncation: bool
    load_in_4bit: bool
    quant_type: str
    compute_dtype: str
    double_quant: bool
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    target_modules: str | tuple[str, ...]
    lora_bias: str
    use_rslora: bool
    epochs: float
    max_steps: int
    batch_size: int
    grad_accum: int
    learning_rate: float
    scheduler: str
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    logging_steps: int
    save_steps: int
    save_strategy: str
    save_total_limit: int
    seed: int
    shuffle: bool
    shuffle_seed: int
    messages_column: str | None
    context_column: str | None
    response_column: str | None
    train_fraction: float
    mlm: bool
    ignored_keys: tuple[str, ...]


def load_defaults(path: Path = DEFAULTS_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("common"), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'common' section")
    return data


def parse_user_config(text: str) -> dict[str, dict[str, Any]]:
    """Parse `training_config.yaml` text; unwrap `training_config:`; check every key."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"training_config.yaml is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if isinstance(data, dict) and set(data) == {"training_config"}:
        data = data["training_config"] or {}
    if not isinstance(data, dict):
        raise ConfigError("training_config.yaml must be a mapping of sections")
    errors = check_sections(data)
    if errors:
        raise ConfigError("; ".join(errors))
    return {str(k): dict(v or {}) for k, v in data.items()}


def check_sections(data: Mapping[Any, Any]) -> list[str]:
    """Every problem with a sections mapping, in a stable order."""
    errors: list[str] = []
    for section, body in data.items():
        if section not in SCHEMA:
            errors.append(f"unknown section {section!r}; allowed sections: {', '.join(SCHEMA)}")
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            errors.append(f"{section} must be a mapping of keys to values")
            continue
        allowed = SCHEMA[section]
        for key, value in body.items():
            if key not in allowed:
                errors.append(
                    f"unknown key {section}.{key}; allowed in {section}: "
                    + ", ".join(sorted(allowed))
                )
            elif not allowed[key][0](value):
                errors.append(f"{section}.{key} must be {allowed[key][1]}, got {value!r}")
    return errors


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge section mappings key by key; `over` wins; neither input is changed."""
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for section, body in over.items():
        merged = dict(out.get(section) or {})
        merged.update(copy.deepcopy(body or {}))
        out[section] = merged
    return out


def layered_defaults(
    defaults: Mapping[str, Any], method: str, family: str | None
) -> dict[str, Any]:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    out = merge({}, defaults["common"])
    out = merge(out, (defaults.get("methods") or {}).get(method) or {})
    if family:
        out = merge(out, (defaults.get("families") or {}).get(family.lower()) or {})
    return out


def build_config(
    user_text: str, *, method: str, family: str | None, defaults: Mapping[str, Any]
) -> TuneConfig:
    """Defaults (common, method, family) merged with the user's YAML, checked, typed."""
    user = parse_user_config(user_text)
    merged = merge(layered_defaults(defaults, method, family), user)
    errors = check_sections(merged) + _method_rules(merged, method)
    if errors:
        raise ConfigError("; ".join(errors))
    return _typed(merged, method, _ignored(user))


def _method_rules(merged: Mapping[str, Any], method: str) -> list[str]:
    quant = merged.get("QuantizationConfig") or {}
    four, eight = bool(quant.get("load_in_4bit")), bool(quant.get("load_in_8bit"))
    if four and eight:
        return ["cannot set both QuantizationConfig.load_in_4bit and load_in_8bit to true"]
    if eight:
        return [
            "QuantizationConfig.load_in_8bit is not supported by this runtime; use load_in_4bit"
        ]
    if method == "lora" and four:
        return ["method 'lora' must not quantize: set QuantizationConfig.load_in_4bit to false"]
    if method == "qlora" and not four:
        return ["method 'qlora' needs QuantizationConfig.load_in_4bit: true"]
    return []


def _ignored(user: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(f"{s}.{k}" for s, body in user.items() for k in body if SCHEMA[s][k][1] == IGNORED)


def _typed(m: Mapping[str, Any], method: str, ignored: tuple[str, ...]) -> TuneConfig:
    model, tok, quant = m.get("ModelConfig", {}), m["TokenizerParams"], m["QuantizationConfig"]
    lora, train, data = m["LoraConfig"], m["TrainingArguments"], m.get("DatasetConfig", {})
    modules = lora["target_modules"]
    return TuneConfig(
        method=method,
        torch_dtype=str(model.get("torch_dtype", "float32")),
        chat_template=model.get("chat_template"),
        max_length=int(tok["max_length"]),
        truncation=bool(tok.get("truncation", True)),
        load_in_4bit=bool(quant.get("load_in_4bit", False)),
        quant_type=str(quant.get("bnb_4bit_quant_type", "nf4")),
        compute_dtype=str(quant.get("bnb_4bit_compute_dtype", "float32")),
        double_quant=bool(quant.get("bnb_4bit_use_double_quant", False)),
        lora_r=int(lora["r"]),
        lora_alpha=float(lora["lora_alpha"]),
        lora_dropout=float(lora["lora_dropout"]),
        target_modules=modules if isinstance(modules, str) else tuple(modules),
        lora_bias=str(lora.get("bias", "none")),
        use_rslora=bool(lora.get("use_rslora", False)),
        epochs=float(train["num_train_epochs"]),
        max_steps=int(train.get("max_steps", -1)),
        batch_size=int(train["per_device_train_batch_size"]),
        grad_accum=int(train.get("gradient_accumulation_steps", 1)),
        learning_rate=float(train["learning_rate"]),
        scheduler=str(train.get("lr_scheduler_type", "linear")),
        warmup_steps=int(train.get("warmup_steps", 0)),
        weight_decay=float(train.get("weight_decay", 0.0)),
        max_grad_norm=float(train.get("max_grad_norm", 1.0)),
        logging_steps=int(train.get("logging_steps", 1)),
        save_steps=int(train.get("save_steps", 50)),
        save_strategy=str(train.get("save_strategy", "steps")),
        save_total_limit=int(train.get("save_total_limit", 2)),
        seed=int(train.get("seed", 42)),
        shuffle=bool(data.get("shuffle_dataset", True)),
        shuffle_seed=int(data.get("shuffle_seed", 42)),
        messages_column=data.get("messages_column"),
        context_column=data.get("context_column"),
        response_column=data.get("response_column"),
        train_fraction=float(data.get("train_test_split", 1)),
        mlm=bool((m.get("DataCollator") or {}).get("mlm", False)),
        ignored_keys=ignored,
    )
