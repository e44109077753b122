"""What one pass reads (a handful of LISTs) and how it writes (counted, race-tolerant).

`list_world` makes the pass's LIST calls (paged): Workspaces, Nodes, NodeClaims and the
children by the `kaito.sh/workspace` label, each kept only when its controller owner
reference names a listed Workspace by uid; Jobs only when some Workspace tunes, Pods only
when a status needs them (lazily, once), and the log tail of a pod that is fetching
weights (one GET per Workspace still starting); a GET for each ConfigMap a Workspace names and
for no other; Secrets never by LIST, only a metadata GET of one a Workspace's pods name
(its API key Secret, its Ray token Secret), lazily, once per pass. `PassWriter` is the
provisioners' Writer and the pass's own: AlreadyExists on create and NotFound on delete
count as success (a child's AlreadyExists is a conflict: the name is held by an object that
is not the Workspace's), and every write is tallied.
`DryWriter` prints what would be written instead. Neither knows what a Workspace should look like.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from crds.workspace import API_VERSION, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from reconciler.kube import Kube, KubeError, resource_path

Obj = dict[str, Any]
Key = tuple[str, str]
log = logging.getLogger(__name__)

WORKSPACE_API = API_VERSION
NODECLAIM_API = "karpenter.sh/v1"
CHILD_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Service"),
               ("v1", "ConfigMap"))
POLICY_KIND = ("networking.k8s.io/v1", "NetworkPolicy")  # multi-node Workspaces only
COMPONENT = "kaito-reconciler"
LOG_TAIL_LINES, LOG_TAIL_BYTES = 20, 16384  # enough for the last progress line of a download
READERS = 4  # LISTs in flight at once after the Workspaces' (the apiserver's default
# max-requests-inflight is 400; four keep this process busy decoding while it encodes)


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
    configmaps: dict[Key, Obj] = field(default_factory=dict)  # those a Workspace names
    configmap_errors: dict[Key, str] = field(default_factory=dict)  # read failures
    _pods: dict[Key, list[Obj]] | None = None
    _secrets: dict[Key, Obj | None] = field(default_factory=dict)

    def pods(self, key: Key) -> list[Obj]:
        if self._pods is None:
            self._pods = defaultdict(list)
            for pod in self.kube.list_items("v1", "Pod", self.namespace, LABEL_WORKSPACE):
                k = owner_key(pod)
                if k:
                    self._pods[k].append(pod)
        return self._pods.get(key, [])

    def secret(self, namespace: str, name: str) -> Obj | None:
        """The metadata of Secret namespace/name (never its data), None when it does not
        exist; read once per pass. A failed read raises KubeError."""
        key = (namespace, name)
        if key not in self._secrets:
            try:
                self._secrets[key] = self.kube.get_metadata("v1", "Secret", namespace, name)
            except KubeError as exc:
                if not exc.not_found:
                    raise
                self._secrets[key] = None
        return self._secrets[key]

    def log_tail(self, namespace: str, pod: str, container: str) -> str | None:
        """The last lines a container wrote (GET pods/log through the apiserver and the
        node's kubelet); None when they cannot be read (the container has not started, the
        kubelet is unreachable, the role may not read logs): the caller's status then says
        what the pod status alone says, and the reason is logged."""
        path = resource_path("v1", "Pod", namespace, pod) + "/log"
        query = {"container": container, "tailLines": str(LOG_TAIL_LINES),
                 "limitBytes": str(LOG_TAIL_BYTES)}
        try:
            return self.kube.get_text(path, query)
        except KubeError as exc:
            log.info("no log of %s/%s container %s: %s", namespace, pod, container, exc)
            return None


class ChildError(Exception):
    """A child the pass must not or cannot write; `reason` becomes the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def owned_by(obj: Mapping[str, Any], by_uid: Mapping[str, Key]) -> Key | None:
    """The listed Workspace this object's controller ownerReference names, by uid, in the
    object's own namespace. Labels alone never make an object a Workspace's child: a
    look-alike owned by something else (or by an earlier Workspace of the same name) is not
    touched."""
    md = obj.get("metadata") or {}
    for ref in md.get("ownerReferences") or []:
        if not (isinstance(ref, Mapping) and ref.get("kind") == "Workspace"
                and ref.get("controller")):
            continue
        key = by_uid.get(str(ref.get("uid") or ""))
        if key is not None and key == (str(md.get("namespace")), str(ref.get("name"))):
            return key
    return None


def named_configmaps(kube: Kube, workspaces: list[Obj]) -> tuple[dict[Key, Obj], dict[Key, str]]:
    """GET each ConfigMap an `inference.config` names, once: the pass reads no other
    ConfigMap. Returns the ConfigMaps found and, for reads that failed (other than
    NotFound), the error, so that only the Workspaces naming them are affected."""
    wanted: set[Key] = set()
    for ws in workspaces:
        inference = ws.get("inference")
        name = inference.get("config") if isinstance(inference, Mapping) else None
        if isinstance(name, str) and name:
            wanted.add((str(ws["metadata"].get("namespace")), name))
    found: dict[Key, Obj] = {}
    errors: dict[Key, str] = {}
    for ns, name in sorted(wanted):
        try:
            found[(ns, name)] = kube.request("GET", resource_path("v1", "ConfigMap", ns, name))
        except KubeError as exc:
            if not exc.not_found:
                errors[(ns, name)] = str(exc)
    return found, errors


def list_world(kube: Kube, namespace: str | None, *, nodeclaims: bool = True) -> World:
    """The pass's reads: 6 to 8 LIST calls whatever the number of Workspaces.

    They run side by side (READERS at a time), so the apiserver encodes one answer while
    this process decodes another: a converged pass over 1000 Workspaces spent half its time
    waiting for them one after the other. Jobs and NetworkPolicies are listed only when the
    Workspaces ask for them, once those have arrived. The world is assembled in a fixed
    order, and a failed read fails the pass as before."""
    world = World(kube, namespace)

    def children(api_version: str, kind: str) -> Future[list[Obj]]:
        return pool.submit(kube.list_items, api_version, kind, namespace, LABEL_WORKSPACE)

    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="list") as pool:
        workspaces = pool.submit(kube.list_items, WORKSPACE_API, "Workspace", namespace)
        nodes = pool.submit(kube.list_items, "v1", "Node")
        claims = pool.submit(_nodeclaims, kube) if nodeclaims else None
        listed = [children(*kind) for kind in CHILD_KINDS]
        world.workspaces = workspaces.result()
        if any(ws.get("tuning") for ws in world.workspaces):
            listed.append(children("batch/v1", "Job"))
        policies = any(_maybe_multi_node(ws) for ws in world.workspaces)
        if policies:
            listed.append(children(*POLICY_KIND))
        named = pool.submit(named_configmaps, kube, world.workspaces)
        world.nodes = nodes.result()
        world.nodeclaims = claims.result() if claims is not None else []
        by_uid = {str(ws["metadata"].get("uid")): (str(ws["metadata"].get("namespace")),
                                                   str(ws["metadata"].get("name")))
                  for ws in world.workspaces if ws["metadata"].get("uid")}
        for each in listed:
            _adopt(world, each.result(), by_uid)
        world.configmaps, world.configmap_errors = named.result()
    if not policies and any(c["kind"] == "StatefulSet"
                            for cs in world.children.values() for c in cs):
        # one that went back to a single node
        _adopt(world, kube.list_items(*POLICY_KIND, namespace, LABEL_WORKSPACE), by_uid)
    return world


def _nodeclaims(kube: Kube) -> list[Obj]:
    try:
        return kube.list_items(NODECLAIM_API, "NodeClaim")
    except KubeError as exc:
        if exc.not_found:  # the NodeClaim CRD is not installed: nothing of ours there
            return []
        raise


def _adopt(world: World, listed: list[Obj], by_uid: Mapping[str, Key]) -> None:
    for obj in listed:
        key = owned_by(obj, by_uid)
        if key is not None:
            world.children[key].append(obj)


def _maybe_multi_node(ws: Mapping[str, Any]) -> bool:
    """Whether an inference Workspace may run on several nodes (and so own a NetworkPolicy):
    its stored count says so, or it has none yet (not expanded)."""
    resource, inference = ws.get("resource"), ws.get("inference")
    if not isinstance(inference, Mapping):
        return False
    count = resource.get("count") if isinstance(resource, Mapping) else None
    return not isinstance(count, int) or count > 1


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

    def create_owned(self, obj: Obj) -> Obj:
        """Create a child. The pass creates only what it did not list among the Workspace's
        children (labelled and owned by its uid), so AlreadyExists means the name is taken
        by an object that is not this Workspace's: never taken over, a ChildError instead."""
        try:
            out = self.kube.create(obj)
        except KubeError as exc:
            if not exc.already_exists:
                raise
            md = obj["metadata"]
            raise ChildError("ChildConflict", (
                f"{obj['kind']} {md.get('namespace')}/{md['name']} already exists and is not "
                "owned by this Workspace; kaito does not overwrite it: delete or rename it"
            )) from exc
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

    def create_owned(self, obj: Obj) -> Obj:
        return self.create(obj)

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
