"""Fixtures of the runtime tests: the tiny model, a trained tiny LoRA adapter, servers.

The tiny model is built once per session from a config (random weights, real files);
the adapter is trained in a few AdamW steps so that after a fixed chat prompt it answers
`TARGET`. `serve` runs a Flask app on a real loopback socket with werkzeug.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from rig.tinymodel import build_tiny_model

PROMPT: Any = [{"role": "user", "content": "What is the capital of France?"}]
TARGET = "Paris is it."


def _restored_environment() -> Iterator[None]:
    """Entry points called in-process (`runtime.tuning` main, the server's loader) set
    process-wide variables such as HF_HUB_OFFLINE, as a pod's one process should; a later
    test's subprocess must not inherit them (it would refuse to reach its Hub stand-in).
    Each module and test also starts hub-online, as a pod does unless told otherwise: an
    in-process load in an earlier part of the session may have set HF_HUB_OFFLINE before
    this fixture saved the environment."""
    saved = dict(os.environ)
    os.environ.pop("HF_HUB_OFFLINE", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


# around each module (its module-scoped servers load models in-process) and each test
_module_environment_restored = pytest.fixture(scope="module", autouse=True)(
    _restored_environment)
_test_environment_restored = pytest.fixture(autouse=True)(_restored_environment)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny", seed=0)


def train_adapter(model_dir: Path, out: Path, *, steps: int = 40) -> Path:
    """Train a LoRA adapter that answers TARGET after PROMPT; save it into `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    base: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = list(tok.apply_chat_template(PROMPT, add_generation_prompt=True,
                                          return_dict=True)["input_ids"])
    answer = [*list(tok(TARGET, add_special_tokens=False)["input_ids"]), tok.eos_token_id]
    ids = torch.tensor([prompt + answer])
    labels = torch.tensor([[-100] * len(prompt) + answer])
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                           "o_proj"], task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # peft 0.21 reads a property transformers 5 deprecated; `-W error` beats setup.cfg's filter.
        warnings.filterwarnings("ignore", ".is_gradient_checkpointing. is deprecated",
                                FutureWarning)
        model: Any = get_peft_model(base, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "fr")


@contextmanager
def _serve(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture
def serve() -> Callable[[Flask], AbstractContextManager[str]]:
    """Serve an app on a free loopback port; the context yields its base URL."""
    return _serve
