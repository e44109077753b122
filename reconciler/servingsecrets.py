"""The Secrets a serving workload reads: the user's API key Secret and the Ray token Secret.

Why: a pod whose Secret volume or secretKeyRef names a missing Secret waits in
ContainerCreating with the cause only in its events. So before the pass applies a
Workspace's children it checks, with a GET of the metadata alone, that the API key Secret
the Workspace names (kaito.sh/api-key-secret) exists, and reports ApiKeySecretMissing in
status otherwise; and for a multi-node Workspace it creates the `<name>-ray-token` Secret
once, with a random token, owned by the Workspace (garbage-collected with it) and never
rewritten, so restarted pods and later passes keep the same token.
Must not: read a Secret's data, log or return a token, LIST Secrets, or take over a Secret
it did not create (a same-named one owned by something else is a ChildConflict).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from crds.workspace import ANNOTATION_API_KEY_SECRET, API_KEY_SECRET_KEY, Workspace
from reconciler import common as c
from reconciler.kube import KubeError
from reconciler.objects import ray_token_secret, secrets_needed
from reconciler.world import ChildError, PassWriter, World

Obj = dict[str, Any]
TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits


def _owned(md: Mapping[str, Any], ws: Workspace) -> bool:
    """Whether the object's controller ownerReference is this Workspace (by uid)."""
    return any(isinstance(ref, Mapping) and ref.get("controller") and ref.get("kind") == "Workspace"
               and str(ref.get("uid") or "") == c.uid(ws)
               for ref in md.get("ownerReferences") or [])


def serving_secrets(
    world: World, writer: PassWriter, ws: Workspace, desired: Sequence[Obj],
) -> tuple[str, str] | None:
    """(reason, message) when the workload cannot start for a Secret, else None (the Ray
    token Secret created when it was missing)."""
    ns = ws.metadata.namespace or ""
    api_key, ray = secrets_needed(ws, desired)
    if api_key:
        try:
            found = world.secret(ns, api_key)
        except KubeError as exc:
            return ("ApiKeySecretUnreadable", f"Secret {ns}/{api_key} named by annotation "
                    f"{ANNOTATION_API_KEY_SECRET}: {exc}")
        if found is None:
            return ("ApiKeySecretMissing", (
                f"Secret {ns}/{api_key} named by annotation {ANNOTATION_API_KEY_SECRET} does "
                f"not exist; create it with the model API key under key {API_KEY_SECRET_KEY} "
                f"(kubectl -n {ns} create secret generic {api_key} "
                f"--from-literal={API_KEY_SECRET_KEY}=...)"))
    if ray:
        _ensure_ray_token(world, writer, ws, ray)
    return None


def _ensure_ray_token(world: World, writer: PassWriter, ws: Workspace, name: str) -> None:
    """Create the Ray token Secret unless this Workspace already owns one; ChildError when
    the name is held by an object that is not the Workspace's."""
    ns = ws.metadata.namespace or ""
    found = world.secret(ns, name)
    if found is not None:
        if not _owned(found.get("metadata") or {}, ws):
            raise ChildError("ChildConflict", (
                f"Secret {ns}/{name} already exists and is not owned by this Workspace; kaito "
                "does not overwrite it: delete or rename it"))
        return
    writer.create_owned(ray_token_secret(ws, secrets.token_urlsafe(TOKEN_BYTES)))
