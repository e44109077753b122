"""`kaito webhook bootstrap`: the in-cluster certificate Secret and the webhooks' caBundle.

Why: in a cluster the webhook Deployment mounts its certificate from a Secret, and both
webhook configurations must carry the CA that signed it. We chose a small idempotent Job
(run once at install and daily by a CronJob) over doing this in the server at start: the
server then needs no API access at all, two replicas never race to write the Secret, and
the daily run renews the serving certificate 30 days before expiry while keeping the CA,
so `caBundle` changes only when the CA itself is replaced.
Must not: touch anything but the named Secret and the named webhook configurations, or
write when nothing changed.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webhook.certs import (
    CERT_VALID_FOR,
    RENEW_BEFORE,
    KeyPair,
    build_ca,
    build_certificate,
    renewal_reason,
)

_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapResult:
    """What one run did: the Secret action and the configurations whose caBundle was written."""

    secret: str
    patched: tuple[str, ...]
    unchanged: tuple[str, ...]


def service_hosts(service: str, namespace: str) -> list[str]:
    """The names the apiserver may use for a Service-backed webhook."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def plan_secret(
    data: dict[str, bytes] | None, hosts: Sequence[str], *, now: dt.datetime
) -> tuple[str, dict[str, bytes]]:
    """Pure: ("kept" | "created" | "renewed", the Secret data to have) from the current data."""
    if data is None or any(k not in data for k in _KEYS):
        ca = build_ca(now=now)
        pair = build_certificate(hosts, ca=ca, now=now)
        return ("created" if data is None else "renewed"), _data(ca, pair)
    ca = KeyPair(data["ca.crt"], data["ca.key"])
    if renewal_reason(ca, ca_pem=ca.cert_pem, hosts=[], now=now, renew_before=CERT_VALID_FOR):
        ca = build_ca(now=now)
    pair = KeyPair(data["tls.crt"], data["tls.key"])
    if renewal_reason(pair, ca_pem=ca.cert_pem, hosts=hosts, now=now, renew_before=RENEW_BEFORE):
        return "renewed", _data(ca, build_certificate(hosts, ca=ca, now=now))
    return "kept", data


def bootstrap(
    api: client.ApiClient,
    *,
    namespace: str,
    service: str,
    secret: str,
    webhook_configs: Sequence[str],
    now: dt.datetime,
) -> BootstrapResult:
    """Ensure the Secret, then write its ca.crt into every webhook of the named configurations."""
    core = client.CoreV1Api(api)
    current = _read_secret(core, namespace, secret)
    action, data = plan_secret(current, service_hosts(service, namespace), now=now)
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=secret, namespace=namespace, labels={"app.kubernetes.io/name": "kaito-webhook"}
        ),
        type="kubernetes.io/tls",
        data={k: base64.b64encode(v).decode() for k, v in data.items()},
    )
    if action == "created":
        core.create_namespaced_secret(namespace, body)
    elif action == "renewed":
        core.replace_namespaced_secret(secret, namespace, body)
    patched, unchanged = _patch_ca_bundles(api, webhook_configs, data["ca.crt"])
    return BootstrapResult(secret=action, patched=tuple(patched), unchanged=tuple(unchanged))


def _read_secret(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, bytes] | None:
    try:
        found = core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return {k: base64.b64decode(v) for k, v in (found.data or {}).items()}


def _patch_ca_bundles(
    api: client.ApiClient, names: Sequence[str], ca_pem: bytes
) -> tuple[list[str], list[str]]:
    adm = client.AdmissionregistrationV1Api(api)
    bundle = base64.b64encode(ca_pem).decode()
    kinds = (
        (
            "MutatingWebhookConfiguration",
            adm.read_mutating_webhook_configuration,
            adm.patch_mutating_webhook_configuration,
        ),
        (
            "ValidatingWebhookConfiguration",
            adm.read_validating_webhook_configuration,
            adm.patch_validating_webhook_configuration,
        ),
    )
    patched: list[str] = []
    unchanged: list[str] = []
    for name in names:
        found = False
        for kind, read, patch in kinds:
            config = _read_or_none(read, name)
            if config is None:
                continue
            found = True
            stale = [w.name for w in config.webhooks or [] if w.client_config.ca_bundle != bundle]
            if not stale:
                unchanged.append(f"{kind}/{name}")
                continue
            webhooks = [{"name": w, "clientConfig": {"caBundle": bundle}} for w in stale]
            patch(name, {"webhooks": webhooks})
            patched.append(f"{kind}/{name}")
        if not found:
            raise LookupError(f"no Mutating- or ValidatingWebhookConfiguration named {name!r}")
    return patched, unchanged


def _read_or_none(read: Any, name: str) -> Any:
    try:
        return read(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _data(ca: KeyPair, pair: KeyPair) -> dict[str, bytes]:
    return {
        "ca.crt": ca.cert_pem,
        "ca.key": ca.key_pem,
        "tls.crt": pair.cert_pem,
        "tls.key": pair.key_pem,
    }
