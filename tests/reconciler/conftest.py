"""Reconciler test fixtures: leave no Workspace finalizer behind in a test namespace.

Without this, a test namespace whose Workspaces carry workspace.kaito.sh/cleanup stays
Terminating forever once the reconciler under test is gone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from reconciler.kube import Kube, KubeError


@pytest.fixture(autouse=True)
def _drop_finalizers(request: pytest.FixtureRequest) -> Iterator[None]:
    if "namespace" not in request.fixturenames:
        yield
        return
    namespace: str = request.getfixturevalue("namespace")
    api: client.ApiClient = request.getfixturevalue("api_client")
    yield
    kube = Kube(api)
    try:
        items = kube.list_items("kaito.sh/v1beta1", "Workspace", namespace)
    except KubeError as exc:
        if exc.not_found:  # the CRD is not installed: nothing to clean
            return
        raise
    for ws in items:
        try:
            kube.merge_patch(ws, {"metadata": {"finalizers": None}})
        except KubeError as exc:
            if not exc.not_found:
                raise
