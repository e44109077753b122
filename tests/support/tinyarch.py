"""Tiny random checkpoints with the architecture of a catalog preset, for the Hub stand-in.

Why: a test that serves `smollm2-360m-instruct` or tunes `phi-3-mini-4k-instruct` from the
Hub stand-in needs a repository that loads through exactly the code path the real one
takes (the same `architectures` entry and `model_type`, so the same transformers class and
the same LoRA target modules), yet builds in under a second. The architecture comes from
the preset's family; every size is shrunk; the tokenizer is the rig's tiny BPE one. It must
not touch the network or global random state (the torch generator is forked and seeded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

# Preset family -> (transformers config class name, architecture) of the real checkpoints.
FAMILY_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "smollm2": ("LlamaConfig", "LlamaForCausalLM"),
    "llama3": ("LlamaConfig", "LlamaForCausalLM"),
    "llama2": ("LlamaConfig", "LlamaForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    "phi4": ("Phi3Config", "Phi3ForCausalLM"),
    "qwen2.5": ("Qwen2Config", "Qwen2ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "falcon": ("FalconConfig", "FalconForCausalLM"),
    "phi2": ("PhiConfig", "PhiForCausalLM"),
}
TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "initializer_range": 0.2,
}


def build_tiny_like(family: str, path: Path, *, tokenizer_dir: Path, seed: int = 0,
                    tie_word_embeddings: bool = False, context_length: int = 256) -> Path:
    """Write a tiny random model of `family`'s architecture plus the tokenizer into `path`;
    `context_length` (max_position_embeddings) should be the preset's, so that the
    --max-model-len the reconciler passes is accepted as it is for the real model."""
    import transformers

    if family not in FAMILY_ARCHITECTURES:
        raise ValueError(f"no tiny architecture for family {family!r}: "
                         f"known {sorted(FAMILY_ARCHITECTURES)}")
    config_name, architecture = FAMILY_ARCHITECTURES[family]
    tokenizer: Any = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = {name: int(tokenizer.convert_tokens_to_ids(token)) for name, token in (
        ("eos_token_id", tokenizer.eos_token), ("pad_token_id", tokenizer.pad_token),
        ("bos_token_id", tokenizer.bos_token))}
    config: Any = getattr(transformers, config_name)(
        vocab_size=len(tokenizer), tie_word_embeddings=tie_word_embeddings,
        architectures=[architecture], **{**TINY, "max_position_embeddings": context_length},
        **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        auto: Any = AutoModelForCausalLM
        model: Any = auto.from_config(config)
    generation: Any = GenerationConfig
    model.generation_config = generation(**ids)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
