"""Runtime commands of desired pods, parsed with their modules' own parsers, and mount lookups.

Why: tests/reconciler/test_commands_match_clis.py checks that what the reconciler writes
into pods is what the runtime's command lines accept; this is its reading machinery. It
must not build objects itself or know any flag of its own.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

Obj = dict[str, Any]
PREFIX = "runtime."


@dataclass(frozen=True)
class Step:
    """One runtime command of a pod, parsed by its module's own parser."""

    pod: Obj
    container: Obj
    module: str
    args: argparse.Namespace
    rest: list[str]  # what follows `--` (vLLM's own arguments, for the front)


def pods(objects: list[Obj]) -> Iterator[Obj]:
    for o in objects:
        if o["kind"] in ("Job", "Deployment", "StatefulSet"):
            yield o["spec"]["template"]["spec"]


def parse_command(container: Obj) -> tuple[str, argparse.Namespace, list[str]] | None:
    cmd = list(container["command"])
    if cmd[:2] != ["python", "-m"] or not cmd[2].startswith(PREFIX):
        return None
    module, argv = cmd[2], cmd[3:]
    split = argv.index("--") if "--" in argv else len(argv)
    entry = importlib.import_module(module)
    if hasattr(entry, "__path__"):  # `python -m PACKAGE` runs PACKAGE.__main__
        entry = importlib.import_module(f"{module}.__main__")
    parser: argparse.ArgumentParser = entry.build_parser()
    try:
        args = parser.parse_args(argv[:split])
    except SystemExit as exc:
        pytest.fail(f"container {container['name']}: {module} refuses {argv} (exit {exc.code})")
    return module, args, argv[split + 1:]


def steps_of(objects: list[Obj]) -> list[Step]:
    """Every `python -m runtime.X` container (init containers first), parsed."""
    out: list[Step] = []
    for pod in pods(objects):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            parsed = parse_command(container)
            if parsed is not None:
                out.append(Step(pod, container, *parsed))
    return out


@dataclass(frozen=True)
class Place:
    """Where a path lands: the pod volume, the path inside it, and whether it is writable."""

    volume: Obj
    inside: str
    writable: bool


def place(step: Step, path: str | Path) -> Place:
    target = PurePosixPath(str(path))
    assert target.is_absolute(), f"{step.container['name']}: {target} is not absolute"
    best: Obj | None = None
    for mount in step.container.get("volumeMounts", []):
        root = PurePosixPath(mount["mountPath"])
        if (target == root or root in target.parents) and (
            best is None or len(str(root)) > len(best["mountPath"])
        ):
            best = mount
    assert best is not None, f"{step.container['name']}: {target} is not on a mounted volume"
    volumes = {v["name"]: v for v in step.pod["volumes"]}
    assert best["name"] in volumes, f"mount {best['name']} names no pod volume"
    inside = str(target.relative_to(best["mountPath"]))
    return Place(volumes[best["name"]], inside, not best.get("readOnly", False))


def path_values(args: argparse.Namespace) -> Iterator[Path]:
    """Every parsed value the parser typed as a Path (directories, secret and config files)."""
    for value in vars(args).values():
        if isinstance(value, Path):
            yield value
