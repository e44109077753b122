"""Register our admission webhooks with a control plane by URL and caBundle (tests, demo).

Why: on this machine the webhook runs as a local process (`kaito webhook serve`), not
behind a Service, so the rig points Mutating- and ValidatingWebhookConfigurations at its
URL with the CA it made; the settings are the same as in manifests/base/webhook.
Must not: be imported by the product packages, or touch configurations it did not name.
"""

from __future__ import annotations

import base64
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

DEFAULT_NAME = "kaito-webhook"
_RULES = [
    {
        "apiGroups": ["kaito.sh"],
        "apiVersions": ["v1alpha1", "v1beta1"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["workspaces"],
        "scope": "Namespaced",
    }
]


def webhook_bodies(
    *,
    url: str,
    ca_bundle: bytes | str,
    name: str = DEFAULT_NAME,
    timeout_seconds: int = 10,
    namespace_labels: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two configuration objects, pointing at `url` + /mutate and /validate.

    `namespace_labels` limits them to namespaces with those labels (tests share a cluster).
    """
    pem = ca_bundle.encode() if isinstance(ca_bundle, str) else ca_bundle
    bundle = base64.b64encode(pem).decode()
    base = url.rstrip("/")

    def hook(kind: str) -> dict[str, Any]:
        return {
            "name": f"{kind}.workspaces.kaito.sh",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "clientConfig": {"url": f"{base}/{kind}", "caBundle": bundle},
            "rules": _RULES,
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": timeout_seconds,
            "matchPolicy": "Equivalent",
            "namespaceSelector": {"matchLabels": dict(namespace_labels or {})},
        }

    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{**hook("mutate"), "reinvocationPolicy": "IfNeeded"}],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [hook("validate")],
    }
    return mutating, validating


def register_webhooks(
    api: client.ApiClient,
    *,
    url: str,
    ca_bundle: bytes | str,
    name: str = DEFAULT_NAME,
    timeout_seconds: int = 10,
    namespace_labels: dict[str, str] | None = None,
) -> None:
    """Create, or replace, both configurations named `name`."""
    adm = client.AdmissionregistrationV1Api(api)
    mutating, validating = webhook_bodies(
        url=url,
        ca_bundle=ca_bundle,
        name=name,
        timeout_seconds=timeout_seconds,
        namespace_labels=namespace_labels,
    )
    _upsert(
        mutating,
        adm.create_mutating_webhook_configuration,
        adm.read_mutating_webhook_configuration,
        adm.replace_mutating_webhook_configuration,
    )
    _upsert(
        validating,
        adm.create_validating_webhook_configuration,
        adm.read_validating_webhook_configuration,
        adm.replace_validating_webhook_configuration,
    )


def unregister_webhooks(api: client.ApiClient, *, name: str = DEFAULT_NAME) -> None:
    """Delete both configurations; absent ones count as deleted."""
    adm = client.AdmissionregistrationV1Api(api)
    for delete in (
        adm.delete_mutating_webhook_configuration,
        adm.delete_validating_webhook_configuration,
    ):
        try:
            delete(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _upsert(body: dict[str, Any], create: Any, read: Any, replace: Any) -> None:
    name = body["metadata"]["name"]
    try:
        create(body)
        return
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = read(name)
    body = {
        **body,
        "metadata": {**body["metadata"], "resourceVersion": current.metadata.resource_version},
    }
    replace(name, body)
