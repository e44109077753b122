"""Rules for the upstream Kaito annotations we do not act on but check as upstream does.

Why: a Workspace written for upstream must be admitted or refused the same way here.
`kaito.sh/node-image-family` (ubuntu or azurelinux, any case, surrounding blanks ignored),
`kaito.sh/performance-mode` (balanced, interactivity or throughput; passed to vLLM as
`--performance-mode`) and `kaito.sh/use-local-weights` ("true" or "false") are checked;
`kaito.sh/runtime` and `kaito.sh/max-model-len` are ours and checked in
`presets.validate`. Ours too, and checked here: `kaito.sh/api-key-secret`, the Secret whose
key `api-key` the model API then requires as a bearer token (a Secret name; only where the
reconciler builds the model server: an inference preset, not a template or tuning, so a
Workspace never looks protected while it is not). Pure: reads the typed Workspace, appends
FieldErrors, never raises.
"""

from __future__ import annotations

from crds.workspace import (
    ANNOTATION_API_KEY_SECRET,
    ANNOTATION_NODE_IMAGE_FAMILY,
    ANNOTATION_PERFORMANCE_MODE,
    ANNOTATION_USE_LOCAL_WEIGHTS,
    API_KEY_SECRET_KEY,
    PERFORMANCE_MODES,
    FieldError,
    Workspace,
)
from presets.validate.net import dns_subdomain_problem

NODE_IMAGE_FAMILIES = ("azurelinux", "ubuntu")
BOOLEANS = ("true", "false")


def _one_of(key: str, raw: str, value: str, allowed: tuple[str, ...], what: str) -> FieldError:
    message = f"{raw!r} is not a valid {what}: must be one of {', '.join(allowed)}"
    return FieldError(
        path=f"metadata.annotations[{key}]", type="NotSupported", message=message, value=raw
    )


def check_annotations(ws: Workspace) -> list[FieldError]:
    """Every upstream annotation with a value upstream refuses, and our API key Secret's."""
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
    return out + check_api_key_secret(ws)


def check_api_key_secret(ws: Workspace) -> list[FieldError]:
    """`kaito.sh/api-key-secret`: a Secret name, on a Workspace whose model server we build."""
    raw = ws.annotations.get(ANNOTATION_API_KEY_SECRET)
    if raw is None:
        return []
    path = f"metadata.annotations[{ANNOTATION_API_KEY_SECRET}]"
    problem = "must name a Secret" if not raw else dns_subdomain_problem(raw)
    if problem:
        message = (f"{raw!r} is not a Secret name: {problem} (the Secret in the Workspace's "
                   f"namespace holding the model API key under key {API_KEY_SECRET_KEY})")
        return [FieldError(path=path, type="Invalid", message=message, value=raw)]
    inference = ws.inference
    if inference is None or inference.template is not None:
        what = "a tuning Workspace has no model API" if inference is None else (
            "a Workspace with inference.template runs its own pod as written")
        message = (f"the model API key applies to inference presets only: {what}, so "
                   "nothing would require the key")
        return [FieldError(path=path, type="Forbidden", message=message, value=raw)]
    return []
