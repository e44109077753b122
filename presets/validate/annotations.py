"""Rules for the upstream Kaito annotations we do not act on but check as upstream does.

Why: a Workspace written for upstream must be admitted or refused the same way here.
`kaito.sh/node-image-family` (ubuntu or azurelinux, any case, surrounding blanks ignored),
`kaito.sh/performance-mode` (balanced, interactivity or throughput; passed to vLLM as
`--performance-mode`) and `kaito.sh/use-local-weights` ("true" or "false") are checked;
`kaito.sh/runtime` and `kaito.sh/max-model-len` are ours and checked in
`presets.validate`. Pure: reads the typed Workspace, appends FieldErrors, never raises.
"""

from __future__ import annotations

from crds.workspace import (
    ANNOTATION_NODE_IMAGE_FAMILY,
    ANNOTATION_PERFORMANCE_MODE,
    ANNOTATION_USE_LOCAL_WEIGHTS,
    PERFORMANCE_MODES,
    FieldError,
    Workspace,
)

NODE_IMAGE_FAMILIES = ("azurelinux", "ubuntu")
BOOLEANS = ("true", "false")


def _one_of(key: str, raw: str, value: str, allowed: tuple[str, ...], what: str) -> FieldError:
    message = f"{raw!r} is not a valid {what}: must be one of {', '.join(allowed)}"
    return FieldError(
        path=f"metadata.annotations[{key}]", type="NotSupported", message=message, value=raw
    )


def check_annotations(ws: Workspace) -> list[FieldError]:
    """Every upstream annotation with a value upstream refuses."""
    out: list[FieldError] = []
    annotations = ws.annotations
    checks = (
        (ANNOTATION_NODE_IMAGE_FAMILY, NODE_IMAGE_FAMILIES, "node image family", True),
        (ANNOTATION_PERFORMANCE_MODE, PERFORMANCE_MODES, "performance mode", False),
        (ANNOTATION_USE_LOCAL_WEIGHTS, BOOLEANS, "use-local-weights value", False),
    )
    for key, allowed, what, fold in checks:
        raw = annotations.get(key)
        if raw is None:
            continue
        value = raw.strip().lower() if fold else raw
        if value not in allowed:
            out.append(_one_of(key, raw, value, allowed, what))
    return out
