"""The served context named in the user's inference ConfigMap, checked like the annotation.

Why: the webhook never reads the cluster, so a `max-model-len` in the runtime's section
(`vllm:` or `transformers:`) of the ConfigMap named by `inference.config` is seen by the
reconciler only. It gets the verdicts `kaito.sh/max-model-len` gets at admission: a
positive integer, at most the model's own context (upstream's ModelTokenLimit rule), and
fitting the Workspace's nodes. Pure: the ConfigMap's parsed section comes in as data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crds.workspace import FieldError, Workspace
from presets.catalog import Catalog
from presets.layout import DEFAULT_MAX_NODES
from presets.validate.resource import check_fit

KEYS = ("max-model-len", "max_model_len")
PATH = "inference.config"


def config_max_model_len(section: Mapping[str, Any], config: str) -> tuple[int | None, str]:
    """(the section's max-model-len or None, why it is unusable or "")."""
    raw = next((section[k] for k in KEYS if k in section), None)
    if raw is None:
        return None, ""
    text = str(raw).strip() if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 2**31:
        return None, f"ConfigMap {config}: max-model-len {raw!r} must be a positive integer"
    return int(text), ""


def check_config_context(
    ws: Workspace,
    catalog: Catalog,
    value: int,
    *,
    config: str,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> list[FieldError]:
    """Every problem with serving `value` tokens of context, as the ConfigMap asks."""
    preset = ws.inference.preset if ws.inference is not None else None
    model = catalog.model(preset.name or "") if preset is not None else None
    if model is None:
        return []
    if value > model.context_length:
        message = (
            f"ConfigMap {config}: max-model-len {value} exceeds the context length of "
            f"{model.name}, {model.context_length}"
        )
        return [FieldError(path=PATH, type="Invalid", message=message, value=config)]
    return [
        FieldError(
            path=PATH,
            type="Invalid",
            message=f"ConfigMap {config}: max-model-len {value}: {e.message}",
            value=config,
        )
        for e in check_fit(ws, catalog, max_nodes, max_model_len=value)
    ]
