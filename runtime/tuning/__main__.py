"""`kaito-tune` (python -m runtime.tuning): the three steps of a tuning Job.

Why: the reconciler's tuning Job runs one image three times: an init container that
fetches and checks the data, the trainer, and a pusher that stores the adapter. Each step
is a subcommand; each failure is one clear line in the termination message file
(`/dev/termination-log`, or env KAITO_TERMINATION_LOG) so the reconciler can put the real
reason in the Workspace status, and the exit code is 1 (2 for a bad command line).

  kaito-tune fetch --method M (--data-dir DIR (--url URL ... | --image REF
                   [--pull-secret FILE] [--plain-http]) | --volume DIR) [--config FILE]
                   [--max-bytes N]
  kaito-tune train --model DIR|ORG/NAME|oci://REF|PRESET [--revision REV]
                   --method lora|qlora --data-dir DIR --output-dir DIR [--work-dir DIR]
                   [--config FILE] [--family NAME]
  kaito-tune push  --adapter-dir DIR (--image REF [--push-secret FILE] [--plain-http] |
                   --volume DIR) [--work-dir DIR]

`--config` is the mounted `tuning.config` ConfigMap: the `training_config.yaml` file, or
the directory holding it. `train` writes one JSON object per line to stdout (events
start, step, checkpoint, done, eval) and checkpoints into --work-dir (default: a
`.kaito-work` folder in --output-dir) so a restarted pod resumes; `push --work-dir` removes
that run's checkpoints once the adapter is stored. This module is the shell:
it parses arguments and environment and calls the pure parts; it must not hold tuning
logic of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime import netcheck
from runtime.adapters import oci
from runtime.jobstep import (
    ConfigError,
    DataError,
    OutOfMemory,
    run_step,
)
from runtime.tuning import fetch as fetching
from runtime.tuning.config import METHODS, TuneConfig, build_config, load_defaults
from runtime.tuning.dataset import Columns, Example, load_examples

LOG = logging.getLogger("kaito.tune")
CONFIG_KEY = "training_config.yaml"


def emit(record: Mapping[str, Any]) -> None:
    print(json.dumps(record, sort_keys=False), flush=True)


def read_user_config(path: Path | None) -> str:
    if path is None:
        return ""
    target = path / CONFIG_KEY if path.is_dir() else path
    try:
        return target.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {target}: {exc.strerror}") from exc


def config_for(args: argparse.Namespace, family: str | None) -> TuneConfig:
    text = read_user_config(args.config)
    return build_config(text, method=args.method, family=family, defaults=load_defaults())


def columns_of(config: TuneConfig) -> Columns:
    return Columns(
        messages=config.messages_column,
        prompt=config.context_column,
        completion=config.response_column,
    )


def cmd_fetch(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = config_for(args, None)
    if args.data_dir is None and not args.volume:
        raise ConfigError("fetch --url / --image needs --data-dir")
    if args.url:
        settings = fetching.FetchSettings.from_env(environ, max_bytes=args.max_bytes)
        fetching.fetch_all(args.url, args.data_dir, settings)
        where = args.data_dir
    elif args.image:
        creds = _credentials(args.pull_secret, args.image)
        oci.pull_directory(
            args.image,
            args.data_dir,
            credentials=creds,
            plain_http=args.plain_http,
            max_bytes=args.max_bytes,
            policy=netcheck.oci_policy(environ, LOG),
        )
        where = args.data_dir
    else:
        where = args.volume
    examples = load_examples(where, columns_of(config))
    emit({"event": "data", "directory": str(where), "examples": len(examples)})
    return 0


def _credentials(secret: Path | None, reference: str) -> oci.Credentials | None:
    if secret is None:
        return None
    return oci.credentials_from_dockerconfig(secret, oci.registry_host(reference))


def model_family(model_dir: Path) -> str | None:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    family = config.get("model_type") if isinstance(config, dict) else None
    return str(family) if family else None


def cmd_train(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from runtime.weights import WeightsSettings, ensure, is_local, parse_source

    # The base weights come through the same layer as the server's (node cache, Hub with
    # the modelAccessSecret token, OCI artifact); offline only when told or already local.
    source = parse_source(args.model, args.revision)
    weights = WeightsSettings.from_env(environ)
    if is_local(source, weights) or weights.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    model_dir = ensure(source, weights).path
    config = config_for(args, args.family or model_family(model_dir))
    if config.mlm:
        LOG.info("DataCollator.mlm: true is ignored: causal LM training never masks inputs")
    for key in config.ignored_keys:
        LOG.info("%s has no effect on this runtime (accepted for Kaito compatibility)", key)
    examples = load_examples(args.data_dir, columns_of(config))
    return _train(args, config, model_dir, examples)


def _train(
    args: argparse.Namespace, config: TuneConfig, model_dir: Path, examples: list[Example]
) -> int:
    import torch

    from runtime.tuning import train as training
    from runtime.tuning.encode import encode_all

    work_dir = args.work_dir or args.output_dir / ".kaito-work"
    try:
        model, tokenizer = training.load_for_training(model_dir, config)
        encoded = encode_all(examples, tokenizer, config.max_length, config.truncation)
        train_part, eval_part = _split(encoded, config.train_fraction, config.shuffle_seed)
        pad = int(tokenizer.pad_token_id)
        training.train(
            model, pad, train_part, config, work_dir=work_dir, output_dir=args.output_dir, emit=emit
        )
        if eval_part:
            loss = training.eval_loss(model, eval_part, pad, config.batch_size)
            emit({"event": "eval", "examples": len(eval_part), "loss": round(loss, 6)})
    except (torch.OutOfMemoryError, MemoryError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise OutOfMemory(f"{type(exc).__name__}: {first}") from exc
    return 0


def _split(items: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    if fraction >= 1 or len(items) < 2:
        return items, []
    import random

    order = list(range(len(items)))
    random.Random(seed).shuffle(order)  # noqa: S311  (a reproducible split, not a secret)
    cut = max(1, min(len(items) - 1, round(len(items) * fraction)))
    return [items[i] for i in order[:cut]], [items[i] for i in order[cut:]]


def cmd_push(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    missing = [n for n in tune_files() if not (args.adapter_dir / n).is_file()]
    if missing:
        raise DataError(f"{args.adapter_dir} has no {', '.join(missing)}: training did not finish")
    _check_work_dir(args.work_dir, [args.adapter_dir, *([args.volume] if args.volume else [])])
    if args.volume:
        args.volume.mkdir(parents=True, exist_ok=True)
        for name in tune_files():
            shutil.copyfile(args.adapter_dir / name, args.volume / name)
        emit({"event": "pushed", "volume": str(args.volume)})
    else:
        _push_image(args, environ)
    if args.work_dir is not None and args.work_dir.exists():
        shutil.rmtree(args.work_dir)
        emit({"event": "checkpoints-removed", "work_dir": str(args.work_dir)})
    return 0


def _check_work_dir(work_dir: Path | None, keep: Sequence[Path]) -> None:
    """The checkpoints to remove must not hold the adapter or the output."""
    if work_dir is None:
        return
    root = work_dir.resolve()
    for path in keep:
        target = path.resolve()
        if target == root or root in target.parents:
            raise ConfigError(f"--work-dir {work_dir} holds {path}: it would be removed")


def _push_image(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    creds = _credentials(args.push_secret, args.image)
    # A fresh private folder under TMPDIR (else /tmp): in the Job the adapter volume is
    # mounted read only and its parent (/mnt) belongs to root, not to the pod's user.
    staging = Path(tempfile.mkdtemp(prefix="kaito-push-"))
    try:
        for name in tune_files():
            shutil.copyfile(args.adapter_dir / name, staging / name)
        digest = oci.push_directory(
            staging, args.image, credentials=creds, plain_http=args.plain_http,
            policy=netcheck.oci_policy(environ, LOG),
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    emit({"event": "pushed", "image": args.image, "digest": digest})


def tune_files() -> tuple[str, ...]:
    return ("adapter_config.json", "adapter_model.safetensors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaito-tune", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch and check the input data")
    fetch.add_argument("--data-dir", type=Path, help="where to put fetched data (not --volume)")
    source = fetch.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", action="append", help="an input URL (repeatable)")
    source.add_argument("--image", help="an OCI artifact holding data files")
    source.add_argument("--volume", type=Path, help="a mounted directory of data files")
    fetch.add_argument("--pull-secret", type=Path, help="a mounted dockerconfigjson file")
    fetch.add_argument("--max-bytes", type=int, default=1 << 30)
    fetch.add_argument("--method", choices=METHODS, required=True)
    train = sub.add_parser("train", help="train a LoRA / QLoRA adapter")
    train.add_argument("--model", required=True,
                       help="a model directory, an org/name Hub id, oci://REF or a preset name")
    train.add_argument("--revision", help="the Hub revision of an org/name model")
    train.add_argument("--method", choices=METHODS, required=True)
    train.add_argument("--data-dir", type=Path, required=True)
    train.add_argument("--output-dir", type=Path, required=True)
    train.add_argument("--work-dir", type=Path)
    train.add_argument("--family", help="defaults family (else the model's model_type)")
    push = sub.add_parser("push", help="store the adapter in a registry or a volume")
    push.add_argument("--adapter-dir", type=Path, required=True)
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--image", help="the output image reference")
    target.add_argument("--volume", type=Path, help="a mounted output directory")
    push.add_argument("--push-secret", type=Path, help="a mounted dockerconfigjson file")
    push.add_argument("--work-dir", type=Path, help="checkpoints to remove once stored")
    for each in (fetch, train):
        each.add_argument("--config", type=Path, help="training_config.yaml or its directory")
    for each in (fetch, push):
        each.add_argument("--plain-http", action="store_true", help="registry without TLS")
    return parser


COMMANDS = {"fetch": cmd_fetch, "train": cmd_train, "push": cmd_push}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    return run_step(lambda: COMMANDS[args.command](args, env), env, what="tuning", log=LOG)


if __name__ == "__main__":
    sys.exit(main())
