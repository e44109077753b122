"""Deletion always completes through the real apiserver and our registered webhook.

Before issue L the reconciler's finalizer removal (an UPDATE) was judged like any spec
change: a Workspace the current catalog refuses could never be deleted, and a Workspace
migrated from upstream Kaito (finalizer `workspace.finalizer.kaito.sh`) was never released.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from reconciler.kube import Kube
from tests.reconciler.helpers import create_ws, phi3, reconcile
from tests.support.webhook import Server, admitting

pytestmark = pytest.mark.cluster
OURS, UPSTREAM = "workspace.kaito.sh/cleanup", "workspace.finalizer.kaito.sh"


def _names(kube: Kube, namespace: str) -> list[str]:
    return sorted(w["metadata"]["name"]
                  for w in kube.list_items("kaito.sh/v1beta1", "Workspace", namespace))


def test_an_invalid_and_a_migrated_workspace_are_deleted_through_the_webhook(
    api_client: client.ApiClient, server: Server, namespace: str, workspace_crd: object,
) -> None:
    kube = Kube(api_client)
    stale: dict[str, Any] = phi3("stale", "nowhere")
    stale["inference"]["preset"]["name"] = "a-preset-a-later-catalog-dropped"
    stale["metadata"]["finalizers"] = [OURS, UPSTREAM]
    migrated: dict[str, Any] = phi3("migrated", "nowhere")
    migrated["metadata"]["finalizers"] = [UPSTREAM]
    for body in (stale, migrated):  # stored before the webhook is in place, as after an upgrade
        create_ws(api_client, namespace, body)
    custom = client.CustomObjectsApi(api_client)
    with admitting(api_client, server, namespace, tag="deletion"):
        # a metadata-only edit of the invalid Workspace is admitted
        custom.patch_namespaced_custom_object(
            "kaito.sh", "v1beta1", namespace, "workspaces", "stale",
            {"metadata": {"labels": {"argocd.argoproj.io/instance": "demo"}}})
        for name in ("stale", "migrated"):
            custom.delete_namespaced_custom_object("kaito.sh", "v1beta1", namespace,
                                                   "workspaces", name)
        summary = reconcile(kube, namespace)
        assert _names(kube, namespace) == [], summary.failures
