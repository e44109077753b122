"""The contract between the reconciler pass and the node provisioners.

A provisioner is asked, once per Workspace per pass, to make sure the nodes the Workspace
needs exist (`ensure`), and on deletion to give them back (`release`). Once per pass it
also sweeps what it made for Workspaces that no longer exist (`sweep`). It reads only the
snapshot the pass listed (no extra LIST/GET per Workspace) and writes through the
`Writer`, so that a converged pass makes zero writes and the pass can count its calls.

This module holds types, and the one wording of "N of M nodes ready" that every
provisioner's status shares: no client, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRequest:
    """What one Workspace needs from the provisioner (from the expanded spec)."""

    namespace: str
    name: str
    uid: str
    instance_type: str
    count: int
    label_selector: Mapping[str, str]
    preferred_nodes: Sequence[str] = ()
    gpus_per_node: int = 1
    gpu_resource: str = "nvidia.com/gpu"  # or a MIG slice: nvidia.com/mig-1g.10gb
    match_expressions: Sequence[Mapping[str, Any]] = ()  # of the label selector, honoured
    gpu_memory_gib_per_gpu: float | None = None
    required_gpu_memory_gib: float = 0.0
    storage_gib: int = 100
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """The answer: ready nodes and, when not ready, the real reason in the provider's words."""

    ready: bool
    nodes: Sequence[str] = ()
    reason: str = ""
    message: str = ""


def ready_head(ready: Sequence[str], count: int) -> str:
    """The opening words of every provisioner's node message."""
    return f"{len(ready)} of {count} nodes ready"


def all_ready(ready: Sequence[str], count: int) -> NodeStatus | None:
    """NodesReady naming the ready nodes once there are `count` of them; None before that."""
    if len(ready) < count:
        return None
    return NodeStatus(
        ready=True,
        nodes=tuple(ready),
        reason="NodesReady",
        message=f"{ready_head(ready, count)}: {', '.join(ready)}",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """What the pass listed once: every Node and every karpenter.sh NodeClaim (raw dicts)."""

    nodes: Sequence[Obj] = ()
    nodeclaims: Sequence[Obj] = ()
    now: datetime | None = None


class Writer(Protocol):
    """Writes made for the pass; NotFound on delete and AlreadyExists on create are success."""

    def create(self, obj: Obj) -> Obj: ...

    def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> None: ...

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None: ...


class Provisioner(Protocol):
    name: str

    def ensure(self, req: NodeRequest, snap: Snapshot, writer: Writer) -> NodeStatus: ...

    def release(self, namespace: str, name: str, snap: Snapshot, writer: Writer) -> bool:
        """Start giving back the Workspace's nodes; True once nothing of it is left."""
        ...

    def sweep(self, live: set[tuple[str, str]], snap: Snapshot, writer: Writer) -> list[str]:
        """Delete what we made for Workspaces not in `live` (namespace, name), after a grace."""
        ...
