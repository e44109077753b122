"""The `kaito` command: render, validate, fit, presets, instance-types, model, webhook, reconcile.

The same pure functions the webhook runs (expand, validate, fit), offline, on files, plus
the two shells' own subcommands (`kaito webhook ...` from webhook.cli, `kaito reconcile`
from reconciler.cli), imported directly: this package is the top of the import graph.
Exit codes: 0 success, 1 invalid Workspaces or no fit, 2 unusable input or setup.
This module holds no business rule and no option of the shells; it only wires parsers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from kaito import model as model_cli
from kaito.render import render_command, validate_command
from presets.catalog import Catalog, CatalogError, load_catalog
from presets.fit import UnknownNameError, fit_report
from presets.validate.preset import is_hf_id
from reconciler import cli as reconciler_cli
from reconciler.hfsizing import SizingError, catalog_for
from webhook import cli as webhook_cli

Handler = Callable[[argparse.Namespace], int]


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _catalog(out: TextIO) -> Catalog | None:
    try:
        return load_catalog()
    except CatalogError as exc:
        out.write(f"kaito: {exc}\n")
        return None


def presets_command(args: argparse.Namespace) -> int:
    catalog = _catalog(sys.stderr)
    if catalog is None:
        return 2
    models = sorted(catalog.models.values(), key=lambda m: m.name)
    if args.output == "json":
        items = [
            {
                "name": m.name,
                "hfId": m.hf_id,
                "runtime": m.runtime,
                "parametersB": m.parameters_b,
                "weightsGiB": m.weights_gib,
                "contextLength": m.context_length,
                "access": m.access,
                "tuning": m.tuning,
                "distributed": m.distributed,
                "image": m.image,
                "license": m.license,
            }
            for m in models
        ]
        print(json.dumps({"catalogRevision": catalog.revision, "presets": items}, indent=2))
        return 0
    rows = [
        [
            "NAME",
            "RUNTIME",
            "PARAMS(B)",
            "WEIGHTS(GiB)",
            "CONTEXT",
            "ACCESS",
            "TUNING",
            "MULTI-NODE",
        ]
    ]
    rows += [
        [
            m.name,
            m.runtime,
            f"{m.parameters_b:g}",
            f"{m.weights_gib:g}",
            str(m.context_length),
            m.access,
            "yes" if m.tuning else "no",
            "yes" if m.distributed else "no",
        ]
        for m in models
    ]
    _table(rows, sys.stdout)
    return 0


def instance_types_command(args: argparse.Namespace) -> int:
    catalog = _catalog(sys.stderr)
    if catalog is None:
        return 2
    types = sorted(
        catalog.instance_types.values(), key=lambda t: (t.cloud, t.relative_cost, t.name)
    )
    if args.output == "json":
        items = [
            {
                "name": t.name,
                "cloud": t.cloud,
                "gpuModel": t.gpu_model,
                "gpuCount": t.gpu_count,
                "gpuMemoryGiB": t.gpu_memory_gib,
                "vcpu": t.vcpu,
                "memoryGiB": t.memory_gib,
                "relativeCost": t.relative_cost,
            }
            for t in types
        ]
        doc = {
            "costSource": catalog.cost_source,
            "costDate": catalog.cost_date,
            "instanceTypes": items,
        }
        print(json.dumps(doc, indent=2))
        return 0
    rows = [["NAME", "CLOUD", "GPU", "GPUS", "GiB/GPU", "VCPU", "RAM(GiB)", "REL.COST"]]
    rows += [
        [
            t.name,
            t.cloud,
            t.gpu_model or "-",
            str(t.gpu_count),
            f"{t.gpu_memory_gib:g}",
            str(t.vcpu),
            f"{t.memory_gib:g}",
            f"{t.relative_cost:g}",
        ]
        for t in types
    ]
    _table(rows, sys.stdout)
    print(f"\nrelative cost: {catalog.cost_source} (as of {catalog.cost_date})")
    return 0


def fit_command(args: argparse.Namespace) -> int:
    catalog = _catalog(sys.stderr)
    if catalog is None:
        return 2
    if is_hf_id(args.model) and catalog.model(args.model) is None:
        try:  # an org/name id: sized from its config.json and safetensors index
            catalog = catalog_for(catalog, args.model, endpoint=os.environ.get("HF_ENDPOINT", ""),
                                  token=os.environ.get("HF_TOKEN", ""))
        except SizingError as exc:
            sys.stderr.write(f"kaito fit: {exc}\n")
            return 2
    try:
        report = fit_report(
            args.model,
            args.instance_type,
            catalog=catalog,
            max_model_len=args.max_model_len,
            count=args.count,
            max_nodes=args.max_nodes,
        )
    except UnknownNameError as exc:
        sys.stderr.write(f"kaito fit: {exc}\n")
        return 2
    if args.output == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.message)
    return 0 if report.fits else 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _core_parsers(sub: Any) -> None:
    for name, handler, help_text in (
        ("render", render_command, "print each Workspace in FILE as the webhook would store it"),
        (
            "validate",
            validate_command,
            "check each Workspace in FILE; no output when all are valid",
        ),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-f", "--filename", required=True, help="YAML/JSON file, '-' for stdin")
        p.set_defaults(func=handler)
        if name == "render":
            p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
            p.add_argument(
                "--objects", action="store_true", help="print the Kubernetes objects instead"
            )
    fit = sub.add_parser("fit", help="does MODEL fit an instance type, on how many nodes")
    fit.add_argument("model")
    fit.add_argument("--instance-type", required=True)
    fit.add_argument("--max-model-len", type=_positive)
    fit.add_argument("--count", type=_positive)
    fit.add_argument("--max-nodes", type=_positive, default=8)
    fit.add_argument("-o", "--output", choices=("text", "json"), default="text")
    fit.set_defaults(func=fit_command)
    for name, handler in (("presets", presets_command), ("instance-types", instance_types_command)):
        p = sub.add_parser(name, help=f"list the {name} catalog")
        p.add_argument("-o", "--output", choices=("table", "json"), default="table")
        p.set_defaults(func=handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaito", description="Kaito in Python: offline tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    _core_parsers(sub)
    model_cli.register(sub)
    webhook_cli.register(sub)
    reconciler_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Handler = args.func
    return func(args)

