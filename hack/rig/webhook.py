"""Register our admission webhooks with a control plane by URL and caBundle (tests, demo).

Why: on this machine the webhook runs as a local process (`kaito webhook serve`), not
behind a Service, so the rig points Mutating- and ValidatingWebhookConfigurations at its
URL with the CA it made; every other setting is read from manifests/base/webhook.
Must not: be imported by the product packages, or touch configurations it did not name.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

DEFAULT_NAME = "kaito-webhook"
MANIFEST = Path(__file__).resolve().parents[2] / "manifests/base/webhook/webhookconfigurations.yaml"


def webhook_bodies(
    *,
    url: str,
    ca_bundle: bytes | str,
    name: str = DEFAULT_NAME,
    timeout_seconds: int = 10,
    namespace_labels: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shipped configurations (manifests/base/webhook), pointed at `url` + their path.

    Every webhook keeps the manifest's rules and failure policies; only the client config
    (a URL and our CA instead of the Service), the name, the timeout and, with
    `namespace_labels`, a namespace selector (tests share a cluster) differ.
    """
    pem = ca_bundle.encode() if isinstance(ca_bundle, str) else ca_bundle
    bundle = base64.b64encode(pem).decode()
    base = url.rstrip("/")
    shipped = {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}

    def body(kind: str) -> dict[str, Any]:
        doc = shipped[kind]
        hooks = []
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hooks.append({**hook, "clientConfig": {"url": f"{base}{path}", "caBundle": bundle},
                          "timeoutSeconds": timeout_seconds,
                          "namespaceSelector": {"matchLabels": dict(namespace_labels or {})}})
        return {"apiVersion": doc["apiVersion"], "kind": kind, "metadata": {"name": name},
                "webhooks": hooks}

    return body("MutatingWebhookConfiguration"), body("ValidatingWebhookConfiguration")


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
