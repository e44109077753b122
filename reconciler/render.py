"""`kaito render --objects`: the child objects a Workspace would get, offline.

Registered in the `kaito.renderers` entry-point group as `objects`. The nodes are not
known offline, so node affinity carries only the label selector; the user's inference
ConfigMap is not read. Pure: no cluster, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from presets.catalog import Catalog
from reconciler.expansion import prepare
from reconciler.objects import desired_objects


def render_objects(expanded_obj: Mapping[str, Any], catalog: Catalog) -> list[dict[str, Any]]:
    """Desired children of the (expanded) Workspace; raises SpecError when it cannot run."""
    obj = dict(expanded_obj)
    md = dict(obj.get("metadata") or {})
    md.setdefault("namespace", "default")
    md.setdefault("uid", "00000000-0000-0000-0000-000000000000")
    obj["metadata"] = md
    prep = prepare(obj, catalog)
    return desired_objects(prep.ws, prep.resolved, ())
