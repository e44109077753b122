"""`kaito model push PRESET REGISTRY/REPO:TAG`: a preset's weights as an OCI artifact.

Why: an air-gapped cluster cannot reach the Hugging Face Hub, so a person with access
stores the model's files in the cluster's registry once; a Workspace then names the
artifact in the annotation kaito.sh/model-artifact and each pod's init container pulls it
into the node cache, checked by digest. The catalog says where the preset's weights come
from (its Hugging Face id at the pinned revision, or the packaged weights the runtime image
bakes); `--from DIR` pushes a folder instead (a private preset's weights).

The control plane never imports the data plane, so the fetching and the push run in
`python -m runtime.weights push` (same interpreter; the `runtime` extra must be
installed). This module only turns the preset into that command line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from crds.workspace import ANNOTATION_MODEL_ARTIFACT
from presets.catalog import CatalogError, load_catalog


def push_argv(args: argparse.Namespace) -> list[str]:
    """The runtime command that fetches the preset's weights and pushes them."""
    try:
        spec = load_catalog().model(args.preset)
    except CatalogError as exc:
        raise ValueError(str(exc)) from exc
    if spec is None:
        raise ValueError(f"unknown preset {args.preset!r} (see `kaito presets`)")
    revision: str | None = None
    if args.source is not None:
        model = str(args.source)
    elif spec.access == "private":
        raise ValueError(f"{spec.name} is a private preset: no public weights; use --from DIR")
    elif spec.weights_in_image:
        model = spec.name
    else:
        model, revision = spec.hf_id, spec.revision
    argv = [sys.executable, "-m", "runtime.weights", "push", model, args.reference]
    if revision:
        argv += ["--revision", revision]
    if args.push_secret is not None:
        argv += ["--push-secret", str(args.push_secret)]
    if args.plain_http:
        argv.append("--plain-http")
    return argv


def push_command(args: argparse.Namespace) -> int:
    try:
        argv = push_argv(args)
    except ValueError as exc:
        sys.stderr.write(f"kaito model push: {exc}\n")
        return 2
    done = subprocess.run(argv, check=False)  # noqa: S603 - our own interpreter and module
    if done.returncode == 0:
        sys.stderr.write(f"kaito model push: name it in a Workspace with the annotation "
                         f"{ANNOTATION_MODEL_ARTIFACT}: {args.reference}\n")
    return done.returncode


def register(sub: Any) -> None:
    model = sub.add_parser("model", help="model weights: push a preset's weights to a registry")
    verbs = model.add_subparsers(dest="model_command", required=True)
    push = verbs.add_parser("push", help="store PRESET's weights as an OCI artifact at REF")
    push.add_argument("preset")
    push.add_argument("reference", metavar="REGISTRY/REPO:TAG")
    push.add_argument("--from", dest="source", type=Path, help="push this model folder instead")
    push.add_argument("--push-secret", type=Path, help="a dockerconfigjson file")
    push.add_argument("--plain-http", action="store_true", help="registry without TLS")
    push.set_defaults(func=push_command)
