"""`kubectl` against the installed Workspace CRD shows what the seed promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.kapi import Kube
from rig.seeds import PHI3_INFERENCE as SEED_WORKSPACE
from tests.support.cluster import Kubectl

pytestmark = pytest.mark.cluster

SEED_COLUMNS = ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]


def _condition(kind: str) -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": "Ready", "message": "ok",
            "lastTransitionTime": "2024-01-01T00:00:00Z"}


def test_kubectl_get_workspace_prints_the_seed_columns(
        workspace_crd: Path, namespace: str, kubectl: Kubectl, kube: Kube) -> None:
    applied = kubectl("apply", "-n", namespace, "-f", "-", input=SEED_WORKSPACE)
    assert "workspace.kaito.sh/workspace-phi-3-mini created" in applied.stdout
    header, first = kubectl("get", "workspace", "-n", namespace).stdout.splitlines()
    assert header.split() == SEED_COLUMNS
    assert first.split()[:2] == ["workspace-phi-3-mini", "Standard_NC6s_v3"]
    status = {"status": {"conditions": [_condition(t) for t in
                                        ("ResourceReady", "InferenceReady", "WorkspaceReady")]}}
    kube.patch(f"/apis/kaito.sh/v1alpha1/namespaces/{namespace}/workspaces/"
               "workspace-phi-3-mini/status", status)
    row = kubectl("get", "wk", "-n", namespace, "--no-headers").stdout.split()
    assert row[:5] == ["workspace-phi-3-mini", "Standard_NC6s_v3", "True", "True", "True"]


def test_kubectl_api_resources_lists_workspaces_with_short_names(
        workspace_crd: Path, kubectl: Kubectl) -> None:
    lines = kubectl("api-resources", "--api-group=kaito.sh").stdout.splitlines()
    rows = [line.split() for line in lines[1:]]
    assert [r for r in rows if r[0] == "workspaces"] == [
        ["workspaces", "wk,wks", rows[0][2], "true", "Workspace"]]
    assert rows[0][2].startswith("kaito.sh/")
