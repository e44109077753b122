"""The tuning job end to end: fetch over HTTP, LoRA / QLoRA training, push, pull, serve-side check.

Data is written by the test and served from 127.0.0.1 (the loopback test setting on);
the adapter goes to a real docker-registry with htpasswd auth and comes back with oras;
peft then loads it on the tiny base model and the target answer must become likelier.
"""

from __future__ import annotations

import functools
import json
import threading
import warnings
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from runtime.adapters import oci
from runtime.jobstep import TERMINATION_LOG_ENV
from runtime.netcheck import Policy
from runtime.tuning.__main__ import main
from runtime.tuning.fetch import ALLOW_LOOPBACK_ENV
from tests.support.registry import LocalRegistry, running_registry

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital."
ROWS = [
    {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]}
] * 8


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A directory and the http://127.0.0.1:PORT URL that serves it."""
    root = tmp_path_factory.mktemp("www")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {ALLOW_LOOPBACK_ENV: "1", TERMINATION_LOG_ENV: str(tmp_path / "termination-log")}


def _config(path: Path, **training: object) -> Path:
    body = {"TrainingArguments": {"learning_rate": 0.01, **training}}
    path.write_text(json.dumps({"training_config": body}))
    return path


def _events(out: str, kind: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [r for r in records if r["event"] == kind]


def _answer_logprob(model_dir: Path, adapter: Path | None) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        with warnings.catch_warnings():
            # peft 0.21 reads a property transformers 5 deprecated; `-W error` would raise.
            warnings.filterwarnings(
                "ignore", ".is_gradient_checkpointing. is deprecated", FutureWarning
            )
            model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tok(ANSWER, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    positions = range(len(prompt_ids) - 1, ids.shape[1] - 1)
    return float(sum(logits[p, ids[0, p + 1]] for p in positions))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_a_tuned_adapter_is_pushed_pulled_and_changes_the_answer(
    method: str,
    tiny_model_dir: Path,
    served: tuple[Path, str],
    registry: LocalRegistry,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, base_url = served
    (root / f"{method}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    data, out = tmp_path / "data", tmp_path / "out"
    fetch = ["fetch", "--data-dir", str(data), "--url", f"{base_url}/{method}.jsonl"]
    assert main([*fetch, "--method", method], env) == 0
    assert _events(capsys.readouterr().out, "data")[0]["examples"] == 8

    config = _config(tmp_path / "training_config.yaml", max_steps=12, save_steps=4)
    train = ["train", "--model", str(tiny_model_dir), "--method", method, "--data-dir", str(data)]
    assert main([*train, "--output-dir", str(out), "--config", str(config)], env) == 0
    steps = _events(capsys.readouterr().out, "step")
    assert [s["step"] for s in steps] == list(range(1, 13))
    assert steps[-1]["loss"] < steps[0]["loss"] / 2

    ref = registry.reference(f"adapters/{method}")
    secret = registry.docker_config(tmp_path / "push-secret.json")
    push = ["push", "--adapter-dir", str(out), "--image", ref, "--push-secret", str(secret)]
    assert main([*push, "--plain-http"], env) == 0
    pulled = tmp_path / "pulled"
    oci.pull_directory(
        ref,
        pulled,
        credentials=oci.Credentials(registry.username, registry.password),
        plain_http=True,
        policy=Policy(allow_loopback=True),
    )
    assert sorted(p.name for p in pulled.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]

    before = _answer_logprob(tiny_model_dir, None)
    after = _answer_logprob(tiny_model_dir, pulled)
    assert after > before + 5.0, (before, after)


@pytest.mark.slow
def test_a_restarted_run_resumes_and_ends_where_an_uninterrupted_run_ends(
    tiny_model_dir: Path, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    common = ["train", "--model", str(tiny_model_dir), "--method", "lora", "--data-dir", str(data)]

    def run(out: Path, steps: int) -> str:
        # A constant rate: a linear decay over 3 or 6 steps would differ by design.
        config = _config(
            tmp_path / f"c{steps}.yaml", max_steps=steps, save_steps=3, lr_scheduler_type="constant"
        )
        assert main([*common, "--output-dir", str(out), "--config", str(config)], env) == 0
        return capsys.readouterr().out

    first = run(tmp_path / "resumed", 3)
    assert [s["step"] for s in _events(first, "step")] == [1, 2, 3]
    second = run(tmp_path / "resumed", 6)  # the pod restarts with a longer plan
    assert _events(second, "start")[0]["resumed_from"] == 3
    assert [s["step"] for s in _events(second, "step")] == [4, 5, 6]
    run(tmp_path / "straight", 6)

    from safetensors.torch import load_file

    resumed = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    straight = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    assert resumed.keys() == straight.keys()
    for key, tensor in straight.items():
        torch.testing.assert_close(resumed[key], tensor)


def _failure(argv: list[str], env: dict[str, str]) -> str:
    assert main(argv, env) == 1
    return Path(env[TERMINATION_LOG_ENV]).read_text()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param(
            "cols.jsonl",
            b'{"a": 1, "b": 2, "c": 3}\n',
            "bad data: expected a 'messages' column or 'prompt' and 'completion' columns "
            "(or 'instruction' and 'response'); found: a, b, c\n",
            id="wrong-columns",
        ),
        pytest.param(
            "empty.jsonl", b"", "bad data: 000-empty.jsonl is empty (0 bytes)\n", id="empty-file"
        ),
        pytest.param(
            "fake.parquet",
            b"PAR0 not really",
            "bad data: 000-fake.parquet is not a parquet file (magic bytes b'PAR0' at the start "
            "and b'ally' at the end, expected b'PAR1')\n",
            id="not-parquet",
        ),
    ],
)
def test_bad_data_ends_the_fetch_step_with_a_one_line_reason(
    served: tuple[Path, str],
    env: dict[str, str],
    tmp_path: Path,
    name: str,
    content: bytes,
    expected: str,
) -> None:
    root, base_url = served
    (root / name).write_bytes(content)
    argv = ["fetch", "--data-dir", str(tmp_path / "d"), "--url", f"{base_url}/{name}"]
    assert _failure([*argv, "--method", "lora"], env) == expected


def test_over_the_size_limit_and_loopback_without_the_test_setting_are_refused(
    served: tuple[Path, str], env: dict[str, str], tmp_path: Path
) -> None:
    root, base_url = served
    size = (root / "big.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    argv = [
        "fetch",
        "--data-dir",
        str(tmp_path / "d"),
        "--url",
        f"{base_url}/big.jsonl",
        "--method",
        "lora",
    ]
    message = _failure([*argv, "--max-bytes", "10"], env)
    assert message == (
        f"fetch failed: {base_url}/big.jsonl is {size} bytes, over the limit of 10 bytes\n"
    )
    strict = {TERMINATION_LOG_ENV: env[TERMINATION_LOG_ENV]}
    assert _failure(argv, strict) == (
        "fetch refused: host '127.0.0.1' is a loopback address\n"
    )


def test_a_wrong_push_secret_ends_the_push_step_with_the_registrys_answer(
    registry: LocalRegistry, env: dict[str, str], tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"0" * 64)
    secret = registry.docker_config(tmp_path / "s.json", password="not-the-password")
    argv = [
        "push",
        "--adapter-dir",
        str(adapter),
        "--image",
        registry.reference("x/denied"),
        "--push-secret",
        str(secret),
        "--plain-http",
    ]
    assert _failure(argv, env) == (
        "push denied by registry: UNAUTHORIZED: authentication required "
        f"(HTTP 401 from {registry.host})\n"
    )


def test_a_config_with_an_unknown_section_ends_with_the_allowed_sections(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "training_config.yaml").write_text("training_config:\n  Lora: {r: 4}\n")
    argv = [
        "fetch",
        "--data-dir",
        str(tmp_path / "d"),
        "--volume",
        str(tmp_path),
        "--method",
        "lora",
        "--config",
        str(tmp_path),
    ]
    assert _failure(argv, env) == (
        "bad config: unknown section 'Lora'; allowed sections: ModelConfig, TokenizerParams, "
        "QuantizationConfig, LoraConfig, TrainingArguments, DataCollator, DatasetConfig\n"
    )


def test_data_from_an_oci_artifact_or_a_volume_is_fetched_and_checked(
    registry: LocalRegistry,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "dataset"
    source.mkdir()
    (source / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:3]))
    ref = registry.reference("data/chat")
    creds = oci.Credentials(registry.username, registry.password)
    oci.push_directory(source, ref, kind="dataset", credentials=creds, plain_http=True,
                       policy=Policy(allow_loopback=True))
    secret = registry.docker_config(tmp_path / "pull-secret.json")
    argv = [
        "fetch",
        "--method",
        "qlora",
        "--data-dir",
        str(tmp_path / "d"),
        "--image",
        ref,
        "--pull-secret",
        str(secret),
        "--plain-http",
    ]
    assert main(argv, env) == 0
    assert (tmp_path / "d" / "train.jsonl").read_bytes() == (source / "train.jsonl").read_bytes()
    assert main(["fetch", "--method", "lora", "--volume", str(source)], env) == 0
    counts = [e["examples"] for e in _events(capsys.readouterr().out, "data")]
    assert counts == [3, 3]
