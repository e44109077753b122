"""Valid Workspaces for tests to perturb: one function per shape, plain JSON-ready dicts."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from presets.catalog import Catalog, load_catalog

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
Doc = dict[str, Any]


def inference_ws(
    preset: str = "phi-3-mini-4k-instruct", instance_type: str = "Standard_NC6s_v3", **extra: Any
) -> dict[str, Any]:
    ws: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws-test", "namespace": "default"},
        "resource": {
            "instanceType": instance_type,
            "labelSelector": {"matchLabels": {"apps": "test"}},
        },
        "inference": {"preset": {"name": preset}},
    }
    ws.update(copy.deepcopy(extra))
    return ws


def tuning_ws(
    preset: str = "phi-3-mini-4k-instruct", instance_type: str = "Standard_NC6s_v3"
) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws-tune", "namespace": "default"},
        "resource": {
            "instanceType": instance_type,
            "labelSelector": {"matchLabels": {"app": "tune"}},
        },
        "tuning": {
            "preset": {"name": preset},
            "method": "qlora",
            "input": {"urls": ["https://example.com/data/train.parquet"]},
            "output": {
                "image": "registry.example.com/adapters/tuned:0.0.1",
                "imagePushSecret": "push",
            },
        },
    }


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


def set_path(path: str, value: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def drop_path(path: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]

    return change
