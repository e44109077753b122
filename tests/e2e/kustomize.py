"""Render our kustomize tree with the kustomize that `make test` has: the rig's kubectl 1.20.

Why: Debian ships no kustomize and the Go module proxy is out of reach, so the renderer the
suite can count on is the kubectl that hack/rig builds from Debian's source package. It
embeds kustomize v2.0.3, which predates two things our (current-kustomize) files use:
directories under `resources:` (v2.0.3 wants them under `bases:`) and `patches:` (v2.0.3
has `patchesStrategicMerge:` and `patchesJson6902:`). So the tree is copied to a
temporary folder and those spellings are translated there (by the rig's
`translate_for_kustomize_v2`, which the demo's operator install uses too): the test rig
adapts, the product's files stay current.

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

from rig.operator import translate_for_kustomize_v2

REPO = Path(__file__).resolve().parents[2]
COPIED = ("manifests", "crds", "examples")


class KustomizeError(RuntimeError):
    """The tree could not be translated or rendered; the message says which file and why."""


def legacy_tree(dest: Path) -> Path:
    """Copy the kustomize-relevant folders into `dest`, translated for kustomize v2.0.3."""
    for name in COPIED:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.py")
            )
    for kfile in sorted(dest.rglob("kustomization.yaml")):
        translate_for_kustomize_v2(kfile)
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
