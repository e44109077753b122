"""What `kubectl apply -k` installs: every overlay renders, validates and pins its images.

Why: the kustomize tree is what operators and ArgoCD install; a typo there breaks every
install while the unit tests stay green. Built-in kinds are checked with
kubernetes-validate --strict against a current Kubernetes; the CRD must be the one in
crds/. It must not need a running cluster (only the rig's kubectl, for kustomize).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.e2e.conftest import OVERLAYS
from tests.e2e.kustomize import REPO

K8S_VERSION = "1.32.0"
RECONCILER = "kaito-reconciler"
NAMESPACE = "kaito-system"
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "PriorityClass",
}
PINNED = re.compile(r"^[^\s:@]+(:[0-9A-Za-z_.-]+)?(@sha256:[0-9a-f]{64})?$")
Docs = list[dict[str, Any]]


def kinds(docs: Docs) -> set[str]:
    return {str(d["kind"]) for d in docs}


def pod_specs(docs: Docs) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            out.append((f"{d['kind']}/{d['metadata']['name']}", spec["template"]["spec"]))
    return out


def containers(docs: Docs) -> list[tuple[str, dict[str, Any]]]:
    return [
        (owner, c)
        for owner, spec in pod_specs(docs)
        for c in [*spec.get("initContainers", []), *spec.get("containers", [])]
    ]


def reconciler(docs: Docs) -> dict[str, Any]:
    (cron,) = [d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == RECONCILER]
    return cron


def reconciler_env(docs: Docs) -> dict[str, str]:
    spec = reconciler(docs)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def webhook(docs: Docs) -> dict[str, Any]:
    (deployment,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "kaito-webhook"
    ]
    return deployment


def webhook_env(docs: Docs) -> dict[str, str]:
    (container,) = webhook(docs)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_installs_the_whole_system(rendered: dict[str, Docs], overlay: str) -> None:
    found = kinds(rendered[overlay])
    expected = {
        "Namespace",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "CronJob",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "PodDisruptionBudget",
    }
    assert expected <= found, f"{overlay} lacks {sorted(expected - found)}"


def test_kubectl_apply_k_manifests_is_the_karpenter_overlay(rendered: dict[str, Docs]) -> None:
    assert rendered["manifests"] == rendered["karpenter"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_built_in_kinds_pass_strict_validation(rendered: dict[str, Docs], overlay: str) -> None:
    problems = []
    for doc in rendered[overlay]:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            problems.append(
                f"{doc['kind']}/{doc['metadata']['name']}: {err.message} at {list(err.path)}"
            )
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_crd_is_the_one_in_crds(rendered: dict[str, Docs], overlay: str) -> None:
    shipped = yaml.safe_load((REPO / "crds" / "kaito.sh_workspaces.yaml").read_text())
    (crd,) = [d for d in rendered[overlay] if d["kind"] == "CustomResourceDefinition"]
    assert crd == shipped


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespaced_object_lives_in_kaito_system(
    rendered: dict[str, Docs], overlay: str
) -> None:
    misplaced = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in rendered[overlay]
        if d["kind"] not in CLUSTER_SCOPED and d["metadata"].get("namespace") != NAMESPACE
    ]
    assert misplaced == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_by_tag_or_digest(rendered: dict[str, Docs], overlay: str) -> None:
    images = [(owner, c["image"]) for owner, c in containers(rendered[overlay])]
    assert images, "no containers rendered"
    loose = [
        (o, i)
        for o, i in images
        if not PINNED.match(i)
        or (":" not in i.rsplit("/", 1)[-1] and "@" not in i)
        or i.endswith(":latest")
    ]
    assert loose == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_reconciler_runs_as_a_batch_v1_cronjob_that_never_overlaps(
    rendered: dict[str, Docs], overlay: str
) -> None:
    cron = reconciler(rendered[overlay])
    assert cron["apiVersion"] == "batch/v1"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_selects_its_provisioner(rendered: dict[str, Docs], overlay: str) -> None:
    assert reconciler_env(rendered[overlay])["KAITO_PROVISIONER"] == overlay
    # the webhook judges instanceType by the same install setting (byo: not required)
    assert webhook_env(rendered[overlay])["KAITO_PROVISIONER"] == overlay


def test_the_aks_overlay_names_the_cluster_and_uses_workload_identity(
    rendered: dict[str, Docs],
) -> None:
    env = reconciler_env(rendered["aks"])
    assert {"AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_CLUSTER_NAME"} <= set(env)
    labels = reconciler(rendered["aks"])["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert labels["azure.workload.identity/use"] == "true"


def test_overlays_differ_only_in_the_reconciler(rendered: dict[str, Docs]) -> None:
    """...and in the webhook's KAITO_PROVISIONER (checked above)."""

    def without_cron(docs: Docs) -> Docs:
        kept = [
            copy.deepcopy(d)
            for d in docs
            if not (d["kind"] == "CronJob" and d["metadata"]["name"] == RECONCILER)
        ]
        for env in webhook(kept)["spec"]["template"]["spec"]["containers"][0]["env"]:
            if env["name"] == "KAITO_PROVISIONER":
                env["value"] = "<overlay>"
        return kept

    assert without_cron(rendered["karpenter"]) == without_cron(rendered["byo"])
    assert without_cron(rendered["karpenter"]) == without_cron(rendered["aks"])
