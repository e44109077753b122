"""Settings of the model server: a frozen dataclass parsed from the command line.

Why: the server, its tests and the benchmark build the same `ServerSettings`; parsing
reports every bad flag at once and never touches `sys.argv` unless `main` passes it in.
What it must not do: import torch / transformers (the gunicorn master parses settings and
must stay free of torch work, see the fork notes), read files while parsing (only
`read_api_key`, which a server calls as it starts, reads one) or open sockets.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16", "float16")
# Adapter names become part of model ids and peft adapter keys; Kubernetes names fit.
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
RESERVED_ADAPTER_NAMES = frozenset({"base"})


class SettingsError(ValueError):
    """Every problem found in the command line, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterSpec:
    """One LoRA adapter: its public name, the directory holding it, and its strength."""

    name: str
    path: Path
    strength: float = 1.0


# Where a model pod serves (the Service's targetPort; presets.commands writes the same
# number into the pod's command line, tests/reconciler/test_commands_match_clis.py checks).
DEFAULT_PORT = 5000


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    model: str
    revision: str | None = None  # the Hub revision of an org/name model (the catalog pins it)
    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"  # noqa: S104 - a pod's server listens on every interface
    adapters: tuple[AdapterSpec, ...] = ()
    max_model_len: int | None = None
    dtype: str = "auto"
    threads: int | None = None
    http_threads: int = 8
    served_model_name: str | None = None
    default_max_tokens: int = 256
    max_queue: int = 16  # requests that may wait while one generates; beyond: 429
    # Limits on what one request may ask (issue L): body bytes, prompt characters (checked
    # before tokenizing), a max_tokens ceiling, and how long a generation may make no progress
    # before /health fails (so the kubelet restarts a wedged server).
    max_body_bytes: int = 1024 * 1024
    max_prompt_chars: int = 200_000
    max_tokens_limit: int = 4096
    stuck_after_s: float = 300.0
    # A file holding the bearer token every model API call must carry (an OpenAI-style API
    # key, mounted from a Secret); None: no authentication (the default).
    api_key_file: Path | None = None


def read_api_key(path: Path) -> str:
    """The key in an --api-key-file (a mounted Secret), surrounding whitespace dropped; both
    model servers (app.py, vllm_front.py) read it once as they start. Raises ValueError if
    the file holds no key (refusing to start beats serving an open API), OSError if it cannot
    be read."""
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise ValueError(f"--api-key-file {path} is empty")
    return key


def parse_adapter(text: str) -> AdapterSpec:
    """Parse `NAME=PATH[:STRENGTH]`; raise ValueError with the rule on bad input."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--adapter {text!r}: expected NAME=PATH[:STRENGTH]")
    if not _ADAPTER_NAME.match(name):
        raise ValueError(
            f"--adapter {text!r}: name must match {_ADAPTER_NAME.pattern} (letters, digits, . _ -)"
        )
    if name in RESERVED_ADAPTER_NAMES:
        raise ValueError(f"--adapter {text!r}: the name {name!r} is reserved for the base model")
    path, strength = rest, 1.0
    head, colon, tail = rest.rpartition(":")
    if colon and head:
        try:
            strength = float(tail)
        except ValueError:
            raise ValueError(f"--adapter {text!r}: strength {tail!r} is not a number") from None
        path = head
    if strength != strength or abs(strength) > 100:  # NaN or absurd
        raise ValueError(f"--adapter {text!r}: strength must be a finite number in [-100, 100]")
    return AdapterSpec(name=name, path=Path(path), strength=strength)


def build_parser() -> argparse.ArgumentParser:
    """The server's argparse parser (parse_settings adds the checks it cannot express)."""
    p = argparse.ArgumentParser(
        prog="kaito-model-server",
        description="Serve a causal language model over /chat and the OpenAI API.",
    )
    p.add_argument("--model", required=True,
                   help="a model directory, an org/name Hub id, oci://REF or a preset name")
    p.add_argument("--revision", default=None, help="the Hub revision of an org/name model")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH:STRENGTH")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--http-threads", type=int, default=8, help="gunicorn gthread threads")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--default-max-tokens", type=int, default=256)
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait while one generates (beyond: 429)")
    p.add_argument("--max-body-bytes", type=int, default=1024 * 1024)
    p.add_argument("--max-prompt-chars", type=int, default=200_000)
    p.add_argument("--max-tokens-limit", type=int, default=4096,
                   help="the largest max_tokens a request may ask for")
    p.add_argument("--api-key-file", type=Path, default=None,
                   help="require `Authorization: Bearer <the file's content>` (default: off)")
    p.add_argument("--stuck-after", type=float, default=300.0,
                   help="seconds without a generated token before /health fails")
    return p


def _limit_problems(ns: argparse.Namespace) -> list[str]:
    problems = []
    if ns.max_queue < 0:
        problems.append(f"--max-queue {ns.max_queue}: must not be negative")
    for flag, number in (("--max-body-bytes", ns.max_body_bytes),
                         ("--max-prompt-chars", ns.max_prompt_chars),
                         ("--max-tokens-limit", ns.max_tokens_limit)):
        if number < 1:
            problems.append(f"{flag} {number}: must be at least 1")
    if not ns.stuck_after > 0:
        problems.append(f"--stuck-after {ns.stuck_after}: must be more than 0 seconds")
    return problems


def parse_settings(argv: Sequence[str]) -> ServerSettings:
    """Parse the server's command line; raise SettingsError listing every bad value."""
    ns = build_parser().parse_args(list(argv))
    problems: list[str] = []
    adapters: list[AdapterSpec] = []
    for raw in ns.adapter:
        try:
            adapters.append(parse_adapter(raw))
        except ValueError as exc:
            problems.append(str(exc))
    names = [a.name for a in adapters]
    problems += [
        f"--adapter: duplicate name {n!r}" for n in sorted(set(names)) if names.count(n) > 1
    ]
    if not 0 < ns.port < 65536:
        problems.append(f"--port {ns.port}: must be in 1..65535")
    if ns.max_model_len is not None and ns.max_model_len < 2:
        problems.append(f"--max-model-len {ns.max_model_len}: must be at least 2")
    for flag, value in (("--threads", ns.threads), ("--http-threads", ns.http_threads)):
        if value is not None and value < 1:
            problems.append(f"{flag} {value}: must be at least 1")
    if ns.default_max_tokens < 1:
        problems.append(f"--default-max-tokens {ns.default_max_tokens}: must be at least 1")
    problems += _limit_problems(ns)
    if problems:
        raise SettingsError(problems)
    return ServerSettings(
        model=ns.model,
        revision=ns.revision,
        port=ns.port,
        host=ns.host,
        adapters=tuple(adapters),
        max_model_len=ns.max_model_len,
        dtype=ns.dtype,
        threads=ns.threads,
        http_threads=ns.http_threads,
        served_model_name=ns.served_model_name,
        default_max_tokens=ns.default_max_tokens,
        max_queue=ns.max_queue,
        max_body_bytes=ns.max_body_bytes,
        max_prompt_chars=ns.max_prompt_chars,
        max_tokens_limit=ns.max_tokens_limit,
        stuck_after_s=ns.stuck_after,
        api_key_file=ns.api_key_file,
    )
