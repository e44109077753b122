"""Builds a tiny random Llama model and a byte-level BPE tokenizer with a chat template.

Why: the runtime and tuning tests need a real model directory (config, safetensors weights,
tokenizer files) that the production loading code reads exactly as it would read a real
checkpoint, without downloading anything. Everything here is built from a config in well
under a second. It must not touch the network, the hub cache or global random state beyond
the seeded torch generator it uses while initialising the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB_SIZE = 300
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"

# ChatML, the format SmolLM2 uses, so the tiny model exercises the same template path.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The capital of France is Paris.",
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes that have enough GPUs.",
    "A workspace names a model preset and an instance type.",
    "Bonjour, je suis un petit modele de langue.",
    "user assistant system: hello, how are you today? I am fine, thank you.",
    "0123456789 !?.,;:'\"()[]{}<>-_=+*/\\|@#$%^&~`",
]


def _train_tokenizer() -> Any:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    factory: Any = PreTrainedTokenizerFast
    fast: Any = factory(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token=EOS_TOKEN,
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Llama causal LM and its tokenizer into `path`; return `path`.

    The same seed gives the same weights. The directory loads with
    `AutoModelForCausalLM.from_pretrained(path)` and `AutoTokenizer.from_pretrained(path)`.
    """
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    vocab = len(tokenizer)
    eos_id = int(tokenizer.convert_tokens_to_ids(EOS_TOKEN))
    pad_id = int(tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        bos_token_id=int(tokenizer.convert_tokens_to_ids("<|im_start|>")),
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    config_class: Any = GenerationConfig
    model.generation_config = config_class(
        eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=config.bos_token_id
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
