"""The objects of a Workspace that brings its own pod template (`inference.template`).

Why: upstream Kaito runs a custom model from the user's PodTemplateSpec as it is; so do we.
The template becomes a Deployment of `resource.count` replicas, one per node, on the
Workspace's nodes (its label selector and the nodes the provisioner chose, added to any
affinity the template has), tolerating the GPU taints, with the owner labels added; and a
Service for the ports the template's containers declare. Everything else in the template
is the user's and is kept as written. Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from crds.workspace import Workspace
from presets.expand import Resolved
from reconciler import common as c

Obj = dict[str, Any]


def _ports(spec: Obj) -> list[Obj]:
    seen: set[int] = set()
    out: list[Obj] = []
    for container in spec.get("containers") or []:
        for port in (container.get("ports") or []) if isinstance(container, dict) else []:
            number = port.get("containerPort") if isinstance(port, dict) else None
            if isinstance(number, int) and not isinstance(number, bool) and number not in seen:
                seen.add(number)
                protocol = str(port.get("protocol") or "TCP")
                out.append({"name": f"port-{number}", "port": number, "targetPort": number,
                            "protocol": protocol})
    return out


def _pod(ws: Workspace, resolved: Resolved, nodes: Sequence[str]) -> Obj:
    template = copy.deepcopy((ws.inference.template if ws.inference else None) or {})
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **c.owner_labels(ws)}
    spec = template.setdefault("spec", {})
    ours = c.placement(ws, nodes, spread=resolved.node_count > 1)
    known = {(t.get("key"), t.get("effect")) for t in spec.get("tolerations") or []}
    added = [t for t in ours["tolerations"] if (t["key"], t["effect"]) not in known]
    spec["tolerations"] = [*(spec.get("tolerations") or []), *added]
    affinity = spec.setdefault("affinity", {})
    for kind, value in (ours.get("affinity") or {}).items():
        affinity.setdefault(kind, value)  # the template's own affinity of a kind wins
    return template


def template_objects(ws: Workspace, resolved: Resolved, nodes: Sequence[str]) -> list[Obj]:
    """A Deployment from the user's pod template, and a Service for its declared ports."""
    name = ws.metadata.name or ""
    pod = _pod(ws, resolved, nodes)
    out: list[Obj] = []
    ports = _ports(pod["spec"])
    if ports:
        out.append({
            "apiVersion": "v1", "kind": "Service", "metadata": c.child_metadata(ws, name),
            "spec": {"type": "ClusterIP", "selector": c.owner_labels(ws), "ports": ports},
        })
    out.append({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": c.child_metadata(ws, name),
        "spec": {
            "replicas": int(resolved.node_count),
            "selector": {"matchLabels": c.owner_labels(ws)},
            "strategy": {"type": "Recreate"},
            "template": pod,
        },
    })
    return out
