"""Golden-file comparison shared by every test that pins generated output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def check_golden(path: Path, actual: Any, *, update: bool) -> None:
    """Compare `actual` (JSON-ready) with the YAML golden file at `path`; rewrite when `update`."""
    text = yaml.safe_dump(json.loads(json.dumps(actual)), sort_keys=True, default_flow_style=False)
    if update or not path.exists():
        if not update:
            raise AssertionError(f"golden file {path} is missing; run `make golden` to create it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    expected = path.read_text()
    assert text == expected, f"{path} differs from the output; run `make golden` if intended"
