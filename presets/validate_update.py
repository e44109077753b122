"""Rules that only apply on UPDATE: what a Workspace may not change once created.

instanceType, labelSelector, the preset, the inference/tuning choice, template presence
and the tuning method are fixed at creation, because nodes and workloads were built for
them. Pure comparison of two typed Workspaces; it must not raise.
"""

from __future__ import annotations

from typing import Any

from crds.workspace import FieldError, Workspace

IMMUTABLE = "field is immutable"


def _changed(path: str, new: Any, old: Any) -> list[FieldError]:
    if new == old:
        return []
    return [
        FieldError(
            path=path,
            type="Invalid",
            message=IMMUTABLE,
            value=new if isinstance(new, str) else None,
        )
    ]


def _toggle(path: str, new: Any, old: Any, what: str) -> list[FieldError]:
    if (new is None) == (old is None):
        return []
    message = f"{what} cannot be added or removed once the Workspace exists"
    return [FieldError(path=path, type="Forbidden", message=message)]


def check_update(new: Workspace, old: Workspace) -> list[FieldError]:
    """Every immutability violation between the stored `old` and the incoming `new`."""
    out: list[FieldError] = []
    new_res, old_res = new.resource, old.resource
    out += _changed(
        "resource.instanceType",
        new_res.instance_type if new_res else None,
        old_res.instance_type if old_res else None,
    )
    out += _changed(
        "resource.labelSelector",
        new_res.label_selector if new_res else None,
        old_res.label_selector if old_res else None,
    )
    out += _toggle("inference", new.inference, old.inference, "inference")
    out += _toggle("tuning", new.tuning, old.tuning, "tuning")
    if new.inference is not None and old.inference is not None:
        new_preset, old_preset = new.inference.preset, old.inference.preset
        out += _changed(
            "inference.preset.name",
            new_preset.name if new_preset else None,
            old_preset.name if old_preset else None,
        )
        out += _toggle(
            "inference.template", new.inference.template, old.inference.template, "template"
        )
    if new.tuning is not None and old.tuning is not None:
        new_preset, old_preset = new.tuning.preset, old.tuning.preset
        out += _changed(
            "tuning.preset.name",
            new_preset.name if new_preset else None,
            old_preset.name if old_preset else None,
        )
        out += _changed("tuning.method", new.tuning.method, old.tuning.method)
        new_in, old_in = new.tuning.input, old.tuning.input
        if old_in is not None and old_in.name:
            out += _changed("tuning.input.name", new_in.name if new_in else None, old_in.name)
    return out
