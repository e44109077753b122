"""The seed's Workspace examples, word for word as a user writes them, for every test tier.

Why: the seed promises that these exact files apply, expand and show up in `kubectl get`;
the webhook, rig and benchmark code all start from them, so they are kept once, as the
YAML files in hack/rig/seed_examples/ (comments included, so that `kubectl apply`
sees what a user would send), and read here.

It must not read the examples/ directory (a test of examples/ would then check itself)
nor anything outside the repository; the files are copies and must stay verbatim.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SEED_DIR = Path(__file__).resolve().parent / "seed_examples"

# name -> YAML text: phi-3-inference, phi-3-tuning, phi-3-with-adapters, phi-3-128k-tuning
SEEDS: dict[str, str] = {p.stem: p.read_text() for p in sorted(SEED_DIR.glob("*.yaml"))}
PHI3_INFERENCE = SEEDS["phi-3-inference"]


def seed_object(text: str) -> dict[str, Any]:
    """A fresh dict of one seed text (callers may change it freely)."""
    obj = yaml.safe_load(text)
    if not isinstance(obj, dict):
        raise TypeError(f"a seed example must be one YAML mapping, got {type(obj).__name__}")
    return obj
