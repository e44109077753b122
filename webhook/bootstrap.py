"""`kaito webhook bootstrap`: the in-cluster certificate Secret and the webhooks' caBundle.

Why: in a cluster the webhook Deployment mounts its certificate from a Secret, and both
webhook configurations must carry the CA that signed it. We chose a small idempotent Job
(run once at install and daily by a CronJob) over doing this in the server at start: the
server then needs no API access at all, two replicas never race to write the Secret, and
the daily run renews the serving certificate 30 days before expiry while keeping the CA,
so `caBundle` changes only when the CA itself is replaced.

CA rotation (the CA is replaced a year before it expires, or at once when it is unusable)
must not cut the apiserver off from pods that still serve a certificate of the old CA:
the kubelet swaps the mounted Secret into each pod on its own schedule. So a rotation
moves the old CA into the Secret's `previous-ca.crt` (with `ca-rotated-at`) and the
caBundle holds both, the new CA first; the caBundle is written BEFORE the Secret, so no
pod can serve a certificate the apiserver does not trust yet. The old CA leaves the
bundle (and the Secret) on the first run at least `PREVIOUS_CA_KEPT_FOR` after the
rotation. That is our "every pod serves the new certificate" condition: the pods read
the files, not the API, and this Job may not read pods, so we bound it by time instead of
observing it: a Secret update reaches every mounted volume within the kubelet's sync
period plus its Secret cache TTL (about two minutes by default), our server loads new
files on the next connection, and a restarting pod reads them at start; an hour is a wide
margin, and since rotations happen a year before the old CA expires, keeping it longer
costs nothing (with the daily CronJob it goes on the next day's run). While a previous CA
is still kept, a CA that is merely due is not rotated again (the pods may be mid-swap);
an expired one is (and is not kept: it verifies nothing). An expired previous CA is
dropped at once.
Must not: touch anything but the named Secret and the named webhook configurations,
write when nothing changed, or drop a CA from the caBundle while pods may serve it
(other than an expired one).
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
    CA_VALID_FOR,
    CERT_VALID_FOR,
    RENEW_BEFORE,
    CertificateError,
    KeyPair,
    build_ca,
    build_certificate,
    renewal_reason,
)

_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")
PREVIOUS_CA = "previous-ca.crt"
ROTATED_AT = "ca-rotated-at"
PREVIOUS_CA_KEPT_FOR = dt.timedelta(hours=1)


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
    """Pure: the action and the Secret data to have, from the current data.

    Actions: "kept", "created", "renewed" (serving certificate, same CA), "ca-rotated"
    (new CA, the old one kept as previous) and "previous-ca-dropped" (see the module
    docstring); a run that drops the previous CA and also renews says "renewed".
    """
    if data is None:
        ca = build_ca(now=now)
        return "created", _data(ca, build_certificate(hosts, ca=ca, now=now))
    kept_ca = _readable_ca(data, now=now)
    ca, previous, rotated_at, rotated = _plan_ca(kept_ca, data, now=now)
    pair = KeyPair(data.get("tls.crt", b""), data.get("tls.key", b""))
    renew = renewal_reason(
        pair, ca_pem=ca.cert_pem, hosts=hosts, now=now, renew_before=RENEW_BEFORE
    )
    if renew:
        pair = build_certificate(hosts, ca=ca, now=now)
    new = _data(ca, pair)
    if previous is not None and rotated_at is not None:
        new[PREVIOUS_CA] = previous
        new[ROTATED_AT] = rotated_at.isoformat().encode()
    if new == data:
        return "kept", data
    if rotated:
        return "ca-rotated", new
    if not renew and kept_ca is not None and PREVIOUS_CA in data and PREVIOUS_CA not in new:
        return "previous-ca-dropped", new
    return "renewed", new


def _plan_ca(
    kept_ca: KeyPair | None, data: dict[str, bytes], *, now: dt.datetime
) -> tuple[KeyPair, bytes | None, dt.datetime | None, bool]:
    """(the CA to have, the previous CA to keep and when it was replaced, rotated now?)."""
    previous, rotated_at = _previous(data, now=now)
    if rotated_at is None or now - rotated_at >= PREVIOUS_CA_KEPT_FOR:
        previous, rotated_at = None, None
    if kept_ca is None:
        return build_ca(now=now), previous, rotated_at, False
    ca = kept_ca
    if renewal_reason(ca, ca_pem=ca.cert_pem, hosts=[], now=now, renew_before=dt.timedelta(0)):
        return build_ca(now=now), previous, rotated_at, True  # expired: not kept as previous
    due = renewal_reason(ca, ca_pem=ca.cert_pem, hosts=[], now=now, renew_before=CERT_VALID_FOR)
    if due and previous is None:
        return build_ca(now=now), ca.cert_pem, now, True
    return ca, previous, rotated_at, False


def ca_bundle(data: dict[str, bytes]) -> bytes:
    """The PEM caBundle for Secret data: its CA, then the previous one while it is kept."""
    bundle = data["ca.crt"]
    if PREVIOUS_CA in data:
        bundle = bundle.rstrip(b"\n") + b"\n" + data[PREVIOUS_CA]
    return bundle


def _readable_ca(data: dict[str, bytes], *, now: dt.datetime) -> KeyPair | None:
    """The Secret's CA when its certificate and key are there and belong together."""
    if "ca.crt" not in data or "ca.key" not in data:
        return None
    ca = KeyPair(data["ca.crt"], data["ca.key"])
    # renew_before far in the past: only "unreadable" or "key does not match" count here
    reason = renewal_reason(ca, ca_pem=ca.cert_pem, hosts=[], now=now, renew_before=-CA_VALID_FOR)
    return None if reason else ca


def _previous(
    data: dict[str, bytes], *, now: dt.datetime
) -> tuple[bytes | None, dt.datetime | None]:
    """The previous CA kept in the Secret and when it was replaced; (None, None) when it is
    absent, unreadable or expired (an expired CA verifies nothing)."""
    pem = data.get(PREVIOUS_CA)
    if pem is None:
        return None, None
    try:
        cert = KeyPair(pem, b"").cert
    except CertificateError:
        return None, None
    if cert.not_valid_after_utc <= now:
        return None, None
    try:
        rotated_at = dt.datetime.fromisoformat(data.get(ROTATED_AT, b"").decode())
    except ValueError:
        rotated_at = None  # unknown: treated as long ago
    if rotated_at is not None and rotated_at.tzinfo is None:
        rotated_at = rotated_at.replace(tzinfo=dt.UTC)
    return pem, rotated_at


def bootstrap(
    api: client.ApiClient,
    *,
    namespace: str,
    service: str,
    secret: str,
    webhook_configs: Sequence[str],
    now: dt.datetime,
) -> BootstrapResult:
    """Write the caBundle (the Secret's CA, and the previous one while kept) into every
    webhook of the named configurations, then ensure the Secret: in this order, so a pod
    never serves a certificate the apiserver does not trust yet."""
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
    patched, unchanged = _patch_ca_bundles(api, webhook_configs, ca_bundle(data))
    if action == "created":
        core.create_namespaced_secret(namespace, body)
    elif action != "kept":
        core.replace_namespaced_secret(secret, namespace, body)
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
