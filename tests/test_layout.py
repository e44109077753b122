"""The tree is the architecture: every package is declared, and no old home comes back.

Why: setup.cfg lists its packages by name (so `rig` can live in hack/rig); a new package
directory that is not listed would work in the editable checkout and vanish from a built
wheel or image. The old homes of moved code (presets/runtime, the `kaito.commands` plugin
groups, prefix families) must not reappear. Reads files only; imports nothing of ours.
"""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"crds": "crds", "presets": "presets", "runtime": "runtime", "kaito": "kaito",
         "webhook": "webhook", "reconciler": "reconciler", "rig": "hack/rig"}


def _setup() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    return cfg


def _on_disk() -> set[str]:
    found: set[str] = set()
    for name, folder in ROOTS.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            parts = init.parent.relative_to(root).parts
            found.add(".".join((name, *parts)))
    return found


def test_every_package_directory_is_declared_in_setup_cfg() -> None:
    declared = set(_setup()["options"]["packages"].split())
    assert declared == _on_disk()


def test_the_rig_is_mapped_to_hack_rig() -> None:
    mapping = _setup()["options"]["package_dir"].split("=")
    assert [m.strip() for m in mapping] == ["rig", "hack/rig"]


def test_no_plugin_groups_and_no_old_homes() -> None:
    cfg = _setup()
    assert set(cfg["options.entry_points"]) == {"console_scripts"}
    assert not (REPO / "presets" / "runtime" / "__init__.py").exists()
    flat = [p.name for p in (REPO / "presets").glob("*.py")]
    assert not [n for n in flat if n.startswith(("validate_", "fit_", "cli"))]
