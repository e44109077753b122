"""`kaito-oci` (python -m runtime.adapters): move an adapter into or out of a pod.

Why: an inference pod's init containers pull each `adapters[].source.image` into the
adapters volume before the model server starts (and copy each `source.volumeSource`
adapter there from its read-only mount), and the same command line lets a person push or
fetch an adapter by hand.

  kaito-oci pull REF DEST [--pull-secret FILE] [--plain-http] [--scale FLOAT] [--max-bytes N]
  kaito-oci copy SRC DEST [--scale FLOAT] [--max-bytes N]
  kaito-oci push DIR REF [--push-secret FILE] [--plain-http] [--kind adapter|dataset]

`--pull-secret` / `--push-secret` is a `kubernetes.io/dockerconfigjson` Secret mounted as a
file (its `.dockerconfigjson` key). `--scale` bakes an adapter's strength into its weights
(runtime.adapters.scale) for vLLM, whose `--lora-modules` always loads at full
strength; the transformers server applies strength itself and pulls unscaled. A failure
exits 1 and writes one line to the termination log (`/dev/termination-log`, or env
KAITO_TERMINATION_LOG), exactly as kaito-tune does; 2 means a bad command line.
Registries are reached only on public addresses unless the environment allows more
(runtime.netcheck): `KAITO_OCI_ALLOW_PRIVATE=1` (an operator's in-cluster registry) and
`KAITO_ALLOW_LOOPBACK=1` (this project's tests only).
This module is the shell: it parses arguments and calls runtime.adapters.oci (and
runtime.adapters.copy); it must hold no registry or copy logic of its own and never
print a secret.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from runtime import netcheck
from runtime.adapters import oci
from runtime.adapters.copy import copy_adapter
from runtime.jobstep import run_step

LOG = logging.getLogger("kaito.oci")


def _credentials(secret: Path | None, reference: str) -> oci.Credentials | None:
    if secret is None:
        return None
    return oci.credentials_from_dockerconfig(secret, oci.registry_host(reference))


def cmd_pull(args: argparse.Namespace, policy: netcheck.Policy) -> int:
    files = oci.pull_directory(
        args.reference,
        args.dest,
        credentials=_credentials(args.pull_secret, args.reference),
        plain_http=args.plain_http,
        max_bytes=args.max_bytes,
        policy=policy,
    )
    record = {
        "event": "pulled",
        "image": args.reference,
        "directory": str(args.dest),
        "files": sorted(p.name for p in files),
        "scale": args.scale,
        "scaled_tensors": _scale(args.dest, args.scale),
    }
    print(json.dumps(record), flush=True)
    return 0


def _scale(directory: Path, factor: float) -> int:
    """Bake the strength into the copy in `directory` (vLLM only passes --scale)."""
    if factor == 1.0:
        return 0
    from runtime.adapters.scale import scale_adapter

    return scale_adapter(directory, factor)


def cmd_copy(args: argparse.Namespace, policy: netcheck.Policy) -> int:
    copied = copy_adapter(args.source, args.dest, max_bytes=args.max_bytes)
    record = {
        "event": "copied",
        "source": str(args.source),
        "directory": str(args.dest),
        "files": list(copied.files),
        "skipped": list(copied.skipped),
        "scale": args.scale,
        "scaled_tensors": _scale(args.dest, args.scale),
    }
    print(json.dumps(record), flush=True)
    return 0


def cmd_push(args: argparse.Namespace, policy: netcheck.Policy) -> int:
    digest = oci.push_directory(
        args.source,
        args.reference,
        kind=args.kind,
        credentials=_credentials(args.push_secret, args.reference),
        plain_http=args.plain_http,
        policy=policy,
    )
    print(json.dumps({"event": "pushed", "image": args.reference, "digest": digest}), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaito-oci", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pull = sub.add_parser("pull", help="pull an artifact's files into a directory")
    pull.add_argument("reference", help="the artifact, host/repository:tag")
    pull.add_argument("dest", type=Path, help="the directory to write the files into")
    pull.add_argument("--pull-secret", type=Path, help="a mounted dockerconfigjson file")
    copy = sub.add_parser("copy", help="copy an adapter's flat files from a mounted volume")
    copy.add_argument("source", type=Path, help="the mounted adapter directory (read only)")
    copy.add_argument("dest", type=Path, help="the directory to write the files into")
    for each in (pull, copy):
        each.add_argument(
            "--scale",
            type=float,
            default=1.0,
            help="multiply the adapter's lora_B tensors by this (its strength)",
        )
        each.add_argument("--max-bytes", type=int, default=1 << 30)
    push = sub.add_parser("push", help="push a directory of flat files as one artifact")
    push.add_argument("source", type=Path, help="the directory to push")
    push.add_argument("reference", help="the artifact, host/repository:tag")
    push.add_argument("--push-secret", type=Path, help="a mounted dockerconfigjson file")
    push.add_argument("--kind", choices=oci.KINDS, default="adapter")
    for each in (pull, push):
        each.add_argument("--plain-http", action="store_true", help="registry without TLS")
    return parser


COMMANDS = {"pull": cmd_pull, "copy": cmd_copy, "push": cmd_push}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    return run_step(lambda: COMMANDS[args.command](args, netcheck.oci_policy(env, LOG)), env,
                    what=args.command, log=LOG)


if __name__ == "__main__":
    sys.exit(main())
