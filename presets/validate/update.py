"""Rules that only apply on UPDATE: what a Workspace may not change once created.

instanceType, labelSelector, partition, the preset, the inference/tuning choice, template
presence and the tuning method are fixed at creation, because nodes and workloads were
built for them. As upstream: label selectors compare as the labels they require (so
`matchLabels: {a: b}` equals an `In [b]` expression on `a`), the method ignores case, and
with bring-your-own nodes an old instanceType may be cleared (never changed or set);
with auto-provisioned nodes an empty one may be set once. Pure
comparison of two typed Workspaces; it must not raise.
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


def _selector_key(selector: Any) -> Any:
    """A selector as the labels it requires, when it is only matchLabels and single-value
    `In` expressions; otherwise the selector itself."""
    if not isinstance(selector, dict):
        return selector
    labels = dict(selector.get("matchLabels") or {})
    for expr in selector.get("matchExpressions") or []:
        single = (
            isinstance(expr, dict)
            and expr.get("operator") == "In"
            and isinstance(expr.get("values"), list)
            and len(expr["values"]) == 1
        )
        if not single or expr.get("key") in labels:
            return selector
        labels[expr["key"]] = expr["values"][0]
    return labels


def check_update(new: Workspace, old: Workspace, *, byo: bool = False) -> list[FieldError]:
    """Every immutability violation between the stored `old` and the incoming `new`;
    `byo` is bring-your-own-nodes mode (an old instanceType may then be cleared)."""
    out: list[FieldError] = []
    new_res, old_res = new.resource, old.resource
    new_sku = new_res.instance_type if new_res else None
    old_sku = old_res.instance_type if old_res else None
    if old_sku and not (byo and not new_sku):  # set once, never changed; BYO may clear it
        out += _changed("resource.instanceType", new_sku, old_sku)
    elif not old_sku and new_sku and byo:
        message = "instanceType must stay empty with bring-your-own nodes"
        out.append(FieldError(path="resource.instanceType", type="Forbidden", message=message))
    out += _changed(
        "resource.labelSelector",
        _selector_key(new_res.label_selector if new_res else None),
        _selector_key(old_res.label_selector if old_res else None),
    )
    out += _changed(
        "resource.partition",
        new_res.partition if new_res else None,
        old_res.partition if old_res else None,
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
        out += _changed(
            "tuning.method",
            (new.tuning.method or "").lower() or None,
            (old.tuning.method or "").lower() or None,
        )
        new_in, old_in = new.tuning.input, old.tuning.input
        if old_in is not None and old_in.name:
            out += _changed("tuning.input.name", new_in.name if new_in else None, old_in.name)
    return out
