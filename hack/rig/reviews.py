"""Builders for AdmissionReviews and the seed's Workspaces, shared by the webhook tests.

hack/bench-webhook.py sends these same reviews, so the benchmark measures what the tests
check. Pure dict builders: nothing here starts a server or talks to a cluster.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

from rig.seeds import PHI3_INFERENCE, seed_object

# The seed's phi-3 inference Workspace; use phi3() for a copy to change.
PHI3: dict[str, Any] = seed_object(PHI3_INFERENCE)


def phi3(**changes: Any) -> dict[str, Any]:
    """A fresh copy of the seed's phi-3 Workspace with top-level keys replaced."""
    obj = copy.deepcopy(PHI3)
    obj.update(changes)
    return obj


def review(
    obj: Any,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    api_version: str = "admission.k8s.io/v1",
    version: str = "v1alpha1",
    uid: str | None = None,
) -> dict[str, Any]:
    """An AdmissionReview request as the apiserver sends it for a Workspace."""
    source = obj if isinstance(obj, dict) else old if isinstance(old, dict) else {}
    metadata = source.get("metadata")
    name = metadata.get("name", "") if isinstance(metadata, dict) else ""
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "kaito.sh", "version": version, "kind": "Workspace"},
            "resource": {"group": "kaito.sh", "version": version, "resource": "workspaces"},
            "name": name,
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "tester"},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def patch_ops(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The decoded JSONPatch of a response, [] when it carries none."""
    response = body["response"]
    if "patch" not in response:
        assert "patchType" not in response
        return []
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return ops
