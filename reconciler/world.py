"""What one pass reads (a handful of LISTs) and how it writes (counted, race-tolerant).

`list_world` makes the pass's LIST calls: Workspaces, Nodes, NodeClaims and the owned
children by the `kaito.sh/workspace` label; Jobs only when some Workspace tunes, Pods only
when a status needs them (lazily, once). `PassWriter` is the provisioners' Writer and the
pass's own: AlreadyExists on create and NotFound on delete count as success, and every
write is tallied for the summary. `DryWriter` prints what would be written instead.
Neither knows what a Workspace should look like.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crds.workspace import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from reconciler.kube import Kube, KubeError, resource_path

Obj = dict[str, Any]
Key = tuple[str, str]
log = logging.getLogger(__name__)

WORKSPACE_API = "kaito.sh/v1beta1"
NODECLAIM_API = "karpenter.sh/v1"
CHILD_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Service"),
               ("v1", "ConfigMap"))
COMPONENT = "kaito-reconciler"


def owner_key(obj: Mapping[str, Any]) -> Key | None:
    labels = obj.get("metadata", {}).get("labels") or {}
    name = labels.get(LABEL_WORKSPACE)
    ns = labels.get(LABEL_WORKSPACE_NAMESPACE) or obj.get("metadata", {}).get("namespace")
    return (str(ns), str(name)) if name and ns else None


@dataclass(slots=True)
class World:
    kube: Kube
    namespace: str | None
    workspaces: list[Obj] = field(default_factory=list)
    nodes: list[Obj] = field(default_factory=list)
    nodeclaims: list[Obj] = field(default_factory=list)
    children: dict[Key, list[Obj]] = field(default_factory=lambda: defaultdict(list))
    configmaps: dict[Key, Obj] = field(default_factory=dict)  # (namespace, name) -> any listed
    _pods: dict[Key, list[Obj]] | None = None

    def pods(self, key: Key) -> list[Obj]:
        if self._pods is None:
            self._pods = defaultdict(list)
            for pod in self.kube.list_items("v1", "Pod", self.namespace, LABEL_WORKSPACE):
                k = owner_key(pod)
                if k:
                    self._pods[k].append(pod)
        return self._pods.get(key, [])


def _refs_user_config(ws: Mapping[str, Any]) -> bool:
    return any(isinstance(ws.get(part), Mapping) and ws[part].get("config")
               for part in ("inference", "tuning"))


def list_world(kube: Kube, namespace: str | None, *, nodeclaims: bool = True) -> World:
    """The pass's reads: 6 to 8 LIST calls whatever the number of Workspaces."""
    world = World(kube, namespace)
    world.workspaces = kube.list_items(WORKSPACE_API, "Workspace", namespace)
    world.nodes = kube.list_items("v1", "Node")
    if nodeclaims:
        try:
            world.nodeclaims = kube.list_items(NODECLAIM_API, "NodeClaim")
        except KubeError as exc:
            if not exc.not_found:  # the NodeClaim CRD is not installed: nothing of ours there
                raise
    kinds = list(CHILD_KINDS)
    if any(ws.get("tuning") for ws in world.workspaces):
        kinds.append(("batch/v1", "Job"))
    all_configmaps = any(_refs_user_config(ws) for ws in world.workspaces)
    for api_version, kind in kinds:
        selector = "" if kind == "ConfigMap" and all_configmaps else LABEL_WORKSPACE
        for obj in kube.list_items(api_version, kind, namespace, selector):
            md = obj["metadata"]
            if kind == "ConfigMap":
                world.configmaps[(md.get("namespace", ""), md["name"])] = obj
            key = owner_key(obj)
            if key and _owned(obj):
                world.children[key].append(obj)
    return world


def _owned(obj: Mapping[str, Any]) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("kind") == "Workspace" and r.get("controller") for r in refs)


@dataclass(slots=True)
class Tally:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    events: int = 0


class PassWriter:
    """Writes for the pass and the provisioners, tolerant of the races a level loop expects."""

    def __init__(self, kube: Kube, now: str) -> None:
        self.kube = kube
        self.now = now
        self.tally = Tally()

    def create(self, obj: Obj) -> Obj:
        try:
            out = self.kube.create(obj)
        except KubeError as exc:
            if exc.already_exists:
                return obj
            raise
        self.tally.created += 1
        return out

    def update(self, obj: Obj) -> Obj:
        md = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], md.get("namespace"), md["name"])
        out = self.kube.request("PUT", path, body=obj)
        self.tally.updated += 1
        return out

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        try:
            self.kube.delete(api_version, kind, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return
            raise
        self.tally.deleted += 1

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        body = event_body(involved, type_, reason, message, self.now)
        try:
            self.kube.create(body)
        except KubeError as exc:
            if exc.already_exists:  # the same transition was already reported
                return
            log.warning("event %s for %s not recorded: %s", reason,
                        involved.get("metadata", {}).get("name"), exc)
            return
        self.tally.events += 1


class DryWriter(PassWriter):
    """Prints each write instead of making it (`--dry-run`)."""

    def __init__(self, kube: Kube, now: str, out: list[str]) -> None:
        super().__init__(kube, now)
        self.lines = out

    def _say(self, verb: str, obj: Mapping[str, Any]) -> None:
        md = obj.get("metadata", {})
        self.lines.append(f"{verb} {obj.get('kind')} {md.get('namespace') or '-'}/{md.get('name')}")

    def create(self, obj: Obj) -> Obj:
        self._say("create", obj)
        self.tally.created += 1
        return obj

    def update(self, obj: Obj) -> Obj:
        self._say("update", obj)
        self.tally.updated += 1
        return obj

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        self._say("delete", {"kind": kind, "metadata": {"name": name, "namespace": namespace}})
        self.tally.deleted += 1

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        md = involved.get("metadata", {})
        where = f"{md.get('namespace')}/{md.get('name')}"
        self.lines.append(f"event {type_} {reason} {where}: {message}")


def event_body(involved: Mapping[str, Any], type_: str, reason: str, message: str, now: str) -> Obj:
    """A core/v1 Event with a name derived from its content, so a repeat is AlreadyExists."""
    md = involved.get("metadata", {})
    ns = md.get("namespace") or "default"
    digest = hashlib.sha256(
        "|".join([str(md.get("uid", "")), type_, reason, message]).encode()).hexdigest()[:12]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{md.get('name')}.{digest}", "namespace": ns},
        "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                           "name": md.get("name"), "namespace": md.get("namespace"),
                           "uid": md.get("uid")},
        "type": type_, "reason": reason, "message": message[:1024],
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
    }
