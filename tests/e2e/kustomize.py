"""Render our kustomize tree with the kustomize that `make test` has: the rig's kubectl 1.20.

Why: Debian ships no kustomize and the Go module proxy is out of reach, so the renderer the
suite can count on is the kubectl that hack/rig builds from Debian's source package. It
embeds kustomize v2.0.3, which predates two things our (current-kustomize) files use:
directories under `resources:` (v2.0.3 wants them under `bases:`) and `patches:` (v2.0.3
has `patchesStrategicMerge:` and `patchesJson6902:`). So the tree is copied to a
temporary folder and those spellings are translated there: the test rig adapts, the
product's files stay current.

It must not: change files in the repository, accept a `patches:` entry it cannot
translate faithfully (an inline `patch:` or a partial target fails loudly), or hide
kubectl's error output.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COPIED = ("manifests", "crds", "examples")


class KustomizeError(RuntimeError):
    """The tree could not be translated or rendered; the message says which file and why."""


def _translate(kfile: Path) -> None:
    doc: dict[str, Any] = yaml.safe_load(kfile.read_text()) or {}
    resources = list(doc.pop("resources", []) or [])
    files = [r for r in resources if not (kfile.parent / r).is_dir()]
    dirs = [r for r in resources if (kfile.parent / r).is_dir()]
    if files:
        doc["resources"] = files
    if dirs:
        doc["bases"] = list(doc.get("bases", []) or []) + dirs
    for entry in doc.pop("patches", []) or []:
        if isinstance(entry, dict) and set(entry) == {"path"}:
            doc.setdefault("patchesStrategicMerge", []).append(entry["path"])
        elif (
            isinstance(entry, dict) and set(entry) == {"path", "target"} and _full(entry["target"])
        ):
            doc.setdefault("patchesJson6902", []).append(entry)
        else:
            raise KustomizeError(
                f"{kfile}: cannot translate patches entry {entry!r} for kustomize "
                "v2.0.3 (use `path` alone, or `path` with a target naming group, "
                "version, kind and name)"
            )
    kfile.write_text(yaml.safe_dump(doc, sort_keys=False))


def _full(target: object) -> bool:
    return isinstance(target, dict) and {"group", "version", "kind", "name"} <= set(target)


def legacy_tree(dest: Path) -> Path:
    """Copy the kustomize-relevant folders into `dest`, translated for kustomize v2.0.3."""
    for name in COPIED:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.py")
            )
    for kfile in sorted(dest.rglob("kustomization.yaml")):
        _translate(kfile)
    return dest


def render(kubectl: Path, path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH` as documents; KustomizeError with kubectl's stderr on failure."""
    proc = subprocess.run(
        [str(kubectl), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise KustomizeError(
            f"kubectl kustomize {path} failed (exit {proc.returncode}):\n{proc.stderr}"
        )
    return [d for d in yaml.safe_load_all(proc.stdout) if d]
