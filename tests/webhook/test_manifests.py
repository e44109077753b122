"""manifests/base/webhook: built-in kinds pass `kubernetes-validate --strict`; settings hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WEBHOOK = REPO / "manifests" / "base" / "webhook"
SCHEMA_VERSION = "1.30.0"


def documents() -> list[dict[str, Any]]:
    listed = yaml.safe_load((WEBHOOK / "kustomization.yaml").read_text())["resources"]
    docs: list[dict[str, Any]] = []
    for name in listed:
        docs.extend(d for d in yaml.safe_load_all((WEBHOOK / name).read_text()) if d)
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def test_every_file_in_the_folder_is_listed_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((WEBHOOK / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in WEBHOOK.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_the_manifest_passes_strict_schema_validation(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


def test_the_deployment_runs_two_restricted_replicas_with_probes_and_a_pinned_image() -> None:
    (deploy,) = by_kind("Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/kaito-py/kaito:0.1.0"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]) == {"requests", "limits"}
    (pdb,) = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_the_webhook_configurations_fail_closed_on_create_and_open_on_update() -> None:
    """A CREATE is never stored unchecked; an UPDATE (the finalizer removal among them) is
    admitted while the webhook is down, so deletions never hang on it (the reconciler
    checks the spec again: tests/reconciler/test_webhook_down.py)."""
    (mutating,) = by_kind("MutatingWebhookConfiguration")
    (validating,) = by_kind("ValidatingWebhookConfiguration")
    for config, path in ((mutating, "/mutate"), (validating, "/validate")):
        policies = {}
        for hook in config["webhooks"]:
            assert hook["clientConfig"]["service"]["path"] == path
            assert hook["sideEffects"] == "None"
            assert hook["matchPolicy"] == "Equivalent"
            assert 1 <= hook["timeoutSeconds"] <= 30
            (rule,) = hook["rules"]
            assert rule["apiGroups"] == ["kaito.sh"]
            assert rule["resources"] == ["workspaces"]
            (operation,) = rule["operations"]
            policies[operation] = hook["failurePolicy"]
        assert policies == {"CREATE": "Fail", "UPDATE": "Ignore"}
    assert {h["reinvocationPolicy"] for h in mutating["webhooks"]} == {"IfNeeded"}


def test_the_bootstrap_may_touch_only_its_secret_and_the_webhook_configurations() -> None:
    (role,) = by_kind("Role")
    named = [r for r in role["rules"] if "resourceNames" in r]
    unnamed = [r for r in role["rules"] if "resourceNames" not in r]
    assert unnamed == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]
    assert all(r["resourceNames"] == ["kaito-webhook-tls"] for r in named)
    (cluster_role,) = by_kind("ClusterRole")
    for rule in cluster_role["rules"]:
        assert rule["resourceNames"] == ["kaito-webhook"]
        assert set(rule["verbs"]) <= {"get", "patch"}
