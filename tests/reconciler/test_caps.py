"""Install-wide node caps (issue L, item 4): what a pass would create beyond them is refused
in status, before the provisioner is asked for a single node."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from reconciler.kube import Kube
from reconciler.reconcile import node_cap_refusal
from reconciler.settings import Settings
from tests.reconciler.helpers import conditions, create_ws, get_ws, phi3, reconcile


def _llama(name: str) -> dict[str, Any]:
    """Three nodes of Standard_NC24ads_A100_v4 (the golden multi-node case)."""
    ws = phi3(name, "nowhere", instance_type="Standard_NC24ads_A100_v4")
    ws["inference"] = {"preset": {"name": "llama-3.3-70b-instruct",
                                  "presetOptions": {"modelAccessSecret": "hf-token"}}}
    return ws


def _claims(kube: Kube, name: str) -> int:
    return len(kube.list_items("karpenter.sh/v1", "NodeClaim", None,
                               f"kaito.sh/workspace={name}"))


def test_caps_admit_in_order_and_count_only_what_they_admit() -> None:
    settings = Settings(max_nodes_per_workspace=3, max_nodes_per_namespace=4)
    used: dict[str, int] = {}
    assert node_cap_refusal(settings, used, "a", 3) == ""
    assert "at most 3 per Workspace" in node_cap_refusal(settings, used, "a", 4)
    assert "already use 3" in node_cap_refusal(settings, used, "a", 2)
    assert node_cap_refusal(settings, used, "a", 1) == ""
    assert node_cap_refusal(settings, used, "b", 3) == ""
    assert used == {"a": 4, "b": 3}


def test_the_settings_refuse_a_cap_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Settings(max_nodes_per_namespace=0)


@pytest.mark.cluster
def test_a_workspace_over_the_per_workspace_cap_gets_no_node_claims(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    kube = Kube(api_client)
    create_ws(api_client, namespace, _llama("big"))
    summary = reconcile(kube, namespace, "karpenter", max_nodes_per_workspace=2)
    assert summary.failed == 1
    cond = conditions(get_ws(api_client, namespace, "big"))["ResourceReady"]
    assert (cond["status"], cond["reason"]) == ("False", "NodeCapExceeded")
    assert "at most 2 per Workspace" in cond["message"]
    assert _claims(kube, "big") == 0


@pytest.mark.cluster
def test_the_newer_workspace_over_the_namespace_cap_is_refused_and_the_older_runs(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    kube = Kube(api_client)
    create_ws(api_client, namespace, phi3("a-older", "nowhere"))
    create_ws(api_client, namespace, _llama("b-newer"))
    reconcile(kube, namespace, "karpenter", max_nodes_per_namespace=3)
    assert _claims(kube, "a-older") == 1
    assert _claims(kube, "b-newer") == 0
    refused = conditions(get_ws(api_client, namespace, "b-newer"))["ResourceReady"]
    assert refused["reason"] == "NodeCapExceeded"
    assert f"namespace {namespace} may use at most 3" in refused["message"]
    assert conditions(get_ws(api_client, namespace, "a-older"))["ResourceReady"]["reason"] \
        != "NodeCapExceeded"
