"""The LoRA / QLoRA training loop: resumable, one JSON log line per step.

Why a loop of our own instead of transformers' Trainer: the tuning pod can be restarted at
any time (node loss, preemption, OOM kill), and it must RESUME from its last checkpoint
(adapter weights, optimizer state, RNG state, step) rather than start over; the data order
is a pure function of (seed, epoch), so a resumed run continues exactly where it stopped,
also when it is rerun with more steps. QLoRA on CPU has a bitsandbytes trap: any
eval-mode forward before training repacks the 4-bit weights and training then silently goes
wrong, so the model is put in train mode right after loading and is never run in eval mode
before the adapter is saved.

This module must not fetch data, push artifacts or write outside `work_dir` and
`output_dir`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from runtime.tuning.config import TuneConfig
from runtime.tuning.encode import IGNORE, Encoded

LOG = logging.getLogger("kaito.tune.train")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class TrainResult:
    steps: int
    resumed_from: int
    final_loss: float | None
    output_dir: Path


def load_for_training(model_dir: Path, config: TuneConfig) -> tuple[Any, Any]:
    """The peft-wrapped model (in train mode) and its tokenizer."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    torch.manual_seed(config.seed)  # LoRA's random init: the same seed, the same adapter
    tokenizer = _tokenizer(AutoTokenizer.from_pretrained(model_dir), config)
    kwargs: dict[str, Any] = {"dtype": _dtype(config.torch_dtype)}
    if config.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type=config.quant_type,
            bnb_4bit_compute_dtype=_dtype(config.compute_dtype),
            bnb_4bit_use_double_quant=config.double_quant,
        )
        kwargs["device_map"] = "auto" if torch.cuda.is_available() else "cpu"
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.train()  # before anything else: no eval-mode forward may precede QLoRA training
    if config.load_in_4bit:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", ".is_gradient_checkpointing. is deprecated", FutureWarning
            )
            model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
                model, use_gradient_checkpointing=False
            )
    elif torch.cuda.is_available():
        model = model.to("cuda")
    modules = config.target_modules
    settings: dict[str, Any] = dict(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=modules if isinstance(modules, str) else list(modules),
        bias=config.lora_bias,
        use_rslora=config.use_rslora,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft 0.21 reads a property that transformers 5 deprecated; nothing for us to change.
        warnings.filterwarnings(
            "ignore", ".is_gradient_checkpointing. is deprecated", FutureWarning
        )
        model = get_peft_model(model, LoraConfig(**settings))
    model.train()
    return model, tokenizer


def _tokenizer(tokenizer: Any, config: TuneConfig) -> Any:
    if config.chat_template:
        template = Path(config.chat_template)
        is_file = "{" not in config.chat_template and template.is_file()
        tokenizer.chat_template = template.read_text() if is_file else config.chat_template
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _dtype(name: str) -> Any:
    return "auto" if name == "auto" else getattr(torch, name)


def total_steps(config: TuneConfig, examples: int) -> int:
    if config.max_steps > 0:
        return config.max_steps
    per_epoch = math.ceil(math.ceil(examples / config.batch_size) / config.grad_accum)
    return max(1, math.ceil(config.epochs * per_epoch))


def step_plan(config: TuneConfig, examples: int) -> Iterator[tuple[float, list[list[int]]]]:
    """(epoch position, micro-batches of example indices) for every step, forever."""
    epoch = 0
    while True:
        order = list(range(examples))
        if config.shuffle:
            # A seeded order, not a secret: resume depends on it being reproducible.
            random.Random(config.shuffle_seed + epoch).shuffle(order)  # noqa: S311
        batches = [order[i : i + config.batch_size] for i in range(0, examples, config.batch_size)]
        steps = [
            batches[i : i + config.grad_accum] for i in range(0, len(batches), config.grad_accum)
        ]
        for index, micro in enumerate(steps):
            yield epoch + (index + 1) / len(steps), micro
        epoch += 1


def learning_rate(config: TuneConfig, step: int, total: int) -> float:
    """The learning rate for 0-based `step` of `total`: warmup, then the schedule."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.scheduler == "constant":
        return config.learning_rate
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    if config.scheduler == "cosine":
        return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))
    return config.learning_rate * max(0.0, 1 - progress)


def collate(batch: Sequence[Encoded], pad_id: int, device: Any) -> dict[str, Any]:
    width = max(len(e.input_ids) for e in batch)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    return {
        "input_ids": torch.tensor(ids, device=device),
        "labels": torch.tensor(labels, device=device),
        "attention_mask": torch.tensor(mask, device=device),
    }


def latest_checkpoint(work_dir: Path) -> Path | None:
    root = work_dir / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def save_checkpoint(model: Any, optimizer: Any, work_dir: Path, step: int, keep: int) -> Path:
    root = work_dir / "checkpoints"
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(torch.get_rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(p for p in root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def restore_checkpoint(model: Any, optimizer: Any, checkpoint: Path) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    torch.set_rng_state(torch.load(checkpoint / "rng.pt", weights_only=True))
    return int(json.loads((checkpoint / "state.json").read_text())["step"])


def export_adapter(model: Any, output_dir: Path) -> None:
    """Write exactly adapter_config.json + adapter_model.safetensors into output_dir."""
    # Staged inside output_dir: in the Job only that volume is writable (its parent /mnt
    # belongs to root, not the pod's user), and a rename within one file system is atomic.
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for name in ADAPTER_FILES:
        (tmp / name).replace(output_dir / name)
    shutil.rmtree(tmp, ignore_errors=True)


def train(
    model: Any,
    pad_id: int,
    data: Sequence[Encoded],
    config: TuneConfig,
    *,
    work_dir: Path,
    output_dir: Path,
    emit: Emit,
) -> TrainResult:
    """Train (resuming from work_dir's last checkpoint) and export the adapter."""
    device = next(p.device for p in model.parameters() if p.requires_grad)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    total = total_steps(config, len(data))
    checkpoint = latest_checkpoint(work_dir)
    start = restore_checkpoint(model, optimizer, checkpoint) if checkpoint else 0
    emit(
        {
            "event": "start",
            "resumed_from": start,
            "total_steps": total,
            "examples": len(data),
            "trainable_parameters": sum(p.numel() for p in params),
        }
    )
    plan = step_plan(config, len(data))
    for _ in range(start):
        next(plan)
    began, loss, saved = time.monotonic(), None, start
    for step in range(start, total):
        epoch, micro = next(plan)
        loss = _one_step(model, optimizer, data, micro, pad_id, device, config, step, total)
        done = step + 1
        if done % config.logging_steps == 0 or done == total:
            emit(_step_record(config, step, total, epoch, loss, time.monotonic() - began, start))
        epoch_end = float(epoch).is_integer() and config.save_strategy == "epoch"
        if config.save_strategy != "no" and (done % config.save_steps == 0 or epoch_end):
            path = save_checkpoint(model, optimizer, work_dir, done, config.save_total_limit)
            emit({"event": "checkpoint", "step": done, "path": str(path)})
            saved = done
    if saved < total or latest_checkpoint(work_dir) is None:
        save_checkpoint(model, optimizer, work_dir, max(start, total), config.save_total_limit)
    export_adapter(model, output_dir)
    emit(
        {
            "event": "done",
            "steps": max(start, total),
            "resumed_from": start,
            "final_loss": loss,
            "output_dir": str(output_dir),
        }
    )
    return TrainResult(max(start, total), start, loss, output_dir)


def _step_record(
    config: TuneConfig, step: int, total: int, epoch: float, loss: float, elapsed: float, start: int
) -> dict[str, Any]:
    done = step + 1
    return {
        "event": "step",
        "step": done,
        "total_steps": total,
        "epoch": round(epoch, 4),
        "loss": round(loss, 6),
        "learning_rate": learning_rate(config, step, total),
        "elapsed_s": round(elapsed, 3),
        "steps_per_s": round((done - start) / elapsed, 4) if elapsed else None,
    }


def _one_step(
    model: Any,
    optimizer: Any,
    data: Sequence[Encoded],
    micro: list[list[int]],
    pad_id: int,
    device: Any,
    config: TuneConfig,
    step: int,
    total: int,
) -> float:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, step, total)
    optimizer.zero_grad(set_to_none=True)
    value = 0.0
    for indices in micro:
        batch = collate([data[i] for i in indices], pad_id, device)
        out = model(**batch)
        (out.loss / len(micro)).backward()
        value += float(out.loss.detach()) / len(micro)
    if config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], config.max_grad_norm
        )
    optimizer.step()
    return value


def eval_loss(model: Any, data: Sequence[Encoded], pad_id: int, batch_size: int) -> float:
    """Mean loss on held-out data; call only AFTER the adapter is exported (eval mode)."""
    device = next(p.device for p in model.parameters() if p.requires_grad)
    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            batch = collate(list(data[i : i + batch_size]), pad_id, device)
            losses.append(float(model(**batch).loss))
    return sum(losses) / len(losses)
