"""`python -m runtime.weights`: fetch a model into the node cache, or push one to a registry.

Why: an inference pod whose Workspace names a model artifact runs `pull` as an init
container, so the artifact is in the node cache (checked by digest) before the server
starts; `pull` also prefetches a Hub model. `push` packs a model folder as an OCI artifact
(`kaito model push` calls it). A failure exits 1 with one termination-log line, as every
Job step of ours does; 2 means a bad command line.

  python -m runtime.weights pull MODEL [--revision REV]      (MODEL: oci://REF | org/name | preset)
  python -m runtime.weights push MODEL REF [--revision REV] [--push-secret FILE] [--plain-http]
                                  (MODEL: a folder, org/name or a preset; fetched first)

Settings come from the environment (runtime.weights.settings). This module is the shell
and must hold no fetching logic of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from runtime.adapters import oci
from runtime.jobstep import run_step
from runtime.weights import WeightsSettings, ensure, parse_source
from runtime.weights.registry import pull_model, push_model

LOG = logging.getLogger("kaito.weights")


def cmd_pull(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = WeightsSettings.from_env(environ)
    source = parse_source(args.model, args.revision)
    if source.route == "oci":  # a tag may have moved: resolve it on every start
        path, fetched = pull_model(source.ref, settings, LOG)
    else:
        resolved = ensure(source, settings, LOG)
        path, fetched = resolved.path, resolved.fetched
    print(json.dumps({"event": "weights", "model": str(source), "route": source.route,
                      "path": str(path), "fetched": fetched}), flush=True)
    return 0


def cmd_push(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    credentials = None
    if args.push_secret is not None:
        credentials = oci.credentials_from_dockerconfig(
            args.push_secret, oci.registry_host(args.reference))
    settings = WeightsSettings.from_env(environ)
    folder = ensure(parse_source(args.model, args.revision), settings, LOG).path
    digest = push_model(folder, args.reference, credentials=credentials,
                        plain_http=args.plain_http, policy=settings.net)
    print(json.dumps({"event": "pushed", "image": args.reference, "digest": digest,
                      "folder": str(folder)}), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaito-weights", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pull = sub.add_parser("pull", help="fetch a model into the node cache")
    pull.add_argument("model", help="oci://REF, org/name or a preset name")
    pull.add_argument("--revision", help="the Hub revision (the catalog pins a commit)")
    push = sub.add_parser("push", help="push a model folder as an OCI artifact")
    push.add_argument("model", help="a model folder (flat files), org/name or a preset name")
    push.add_argument("reference", help="host/repository:tag")
    push.add_argument("--revision", help="the Hub revision of an org/name model")
    push.add_argument("--push-secret", type=Path, help="a dockerconfigjson file")
    push.add_argument("--plain-http", action="store_true", help="registry without TLS")
    return parser


COMMANDS = {"pull": cmd_pull, "push": cmd_push}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    return run_step(lambda: COMMANDS[args.command](args, env), env, what=args.command, log=LOG)


if __name__ == "__main__":
    sys.exit(main())
