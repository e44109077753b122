"""`kaito render` and `kaito validate`: the webhook's mutate + validate, run on a file.

Reads every YAML document in the file, expands and validates each Workspace exactly as
admission would, prints what would be stored (or, with `--objects`, the child objects the
reconciler's pure builders make; the nodes are not known offline, so node affinity carries
only the label selector, and the user's inference ConfigMap is not read), and reports
errors as `<name>: <field path>: <message>` on stderr. Documents of other kinds pass
through unchanged. It must hold no business rule of its own and never reach a cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from presets.catalog import Catalog, CatalogError, load_catalog
from presets.expand import expand
from presets.validate import validate_workspace, warnings_for
from reconciler.expansion import prepare
from reconciler.objects import desired_objects


class InputError(Exception):
    """The input cannot be used at all (exit 2)."""


def read_documents(filename: str) -> list[Any]:
    """Every non-empty YAML document in the file ('-' is stdin)."""
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text(encoding="utf-8")
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as exc:
        raise InputError(f"cannot read {filename}: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{filename} is not valid YAML: {exc}") from exc
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise InputError(f"{filename}: document {i + 1} is not a mapping")
    return docs


def _is_workspace(doc: dict[str, Any]) -> bool:
    return bool(doc.get("kind", "Workspace") == "Workspace")


def _label(doc: dict[str, Any], index: int) -> str:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else f"<document {index + 1}>"


def render_objects(expanded_obj: Mapping[str, Any], catalog: Catalog) -> list[dict[str, Any]]:
    """Desired children of the (expanded) Workspace; raises SpecError when it cannot run."""
    obj = dict(expanded_obj)
    md = dict(obj.get("metadata") or {})
    md.setdefault("namespace", "default")
    md.setdefault("uid", "00000000-0000-0000-0000-000000000000")
    obj["metadata"] = md
    prep = prepare(obj, catalog)
    return desired_objects(prep.ws, prep.resolved, ())


def check_documents(docs: list[Any], catalog: Catalog) -> tuple[list[dict[str, Any]], bool]:
    """(documents as they would be stored, all valid?); problems go to stderr."""
    out: list[dict[str, Any]] = []
    valid = True
    for i, doc in enumerate(docs):
        if not _is_workspace(doc):
            out.append(doc)
            continue
        expansion = expand(doc, catalog)
        expanded = expansion.obj
        name = _label(doc, i)
        errors = validate_workspace(expansion.ws, catalog, parse_errors=expansion.errors)
        for error in errors:
            sys.stderr.write(f"{name}: {error.path}: {error.message}\n")
        for warning in warnings_for(expanded, catalog):
            sys.stderr.write(f"{name}: warning: {warning}\n")
        if errors:
            valid = False
        else:
            out.append(expanded)
    return out, valid


def _print(docs: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        doc: Any = (
            docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs}
        )
        print(json.dumps(doc, indent=2))
    elif docs:
        sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False))


def _load(args: argparse.Namespace) -> tuple[list[Any], Catalog]:
    docs = read_documents(args.filename)
    try:
        return docs, load_catalog()
    except CatalogError as exc:
        raise InputError(str(exc)) from exc


def render_command(args: argparse.Namespace) -> int:
    try:
        docs, catalog = _load(args)
    except InputError as exc:
        sys.stderr.write(f"kaito render: {exc}\n")
        return 2
    stored, valid = check_documents(docs, catalog)
    if args.objects:
        objects: list[dict[str, Any]] = []
        for doc in stored:
            objects += render_objects(doc, catalog) if _is_workspace(doc) else [doc]
        stored = objects
    _print(stored, args.output)
    return 0 if valid else 1


def validate_command(args: argparse.Namespace) -> int:
    try:
        docs, catalog = _load(args)
    except InputError as exc:
        sys.stderr.write(f"kaito validate: {exc}\n")
        return 2
    _, valid = check_documents(docs, catalog)
    return 0 if valid else 1
