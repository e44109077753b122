"""`kaito webhook bootstrap` on a real apiserver: Secret created, kept, renewed; caBundle set."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

import pytest
from kubernetes import client

from rig.webhook import register_webhooks, unregister_webhooks
from webhook.bootstrap import BootstrapResult, bootstrap, plan_secret, service_hosts
from webhook.certs import KeyPair, certificate_hosts

NOW = dt.datetime.now(dt.UTC)


def test_plan_secret_creates_keeps_and_renews_with_the_same_ca() -> None:
    hosts = service_hosts("kaito-webhook", "kaito-system")
    action, data = plan_secret(None, hosts, now=NOW)
    assert action == "created"
    assert certificate_hosts(KeyPair(data["tls.crt"], data["tls.key"]).cert) == hosts
    assert plan_secret(data, hosts, now=NOW + dt.timedelta(days=300)) == ("kept", data)
    action, renewed = plan_secret(data, hosts, now=NOW + dt.timedelta(days=340))
    assert action == "renewed"
    assert renewed["ca.crt"] == data["ca.crt"]
    assert renewed["tls.crt"] != data["tls.crt"]
    assert plan_secret({"tls.crt": b"x"}, hosts, now=NOW)[0] == "renewed"


@pytest.mark.cluster
def test_bootstrap_writes_the_secret_and_both_ca_bundles(
    api_client: client.ApiClient, namespace: str
) -> None:
    name = "kaito-webhook-boot-" + uuid.uuid4().hex[:8]
    register_webhooks(
        api_client,
        url="https://127.0.0.1:1",
        ca_bundle=b"placeholder",
        name=name,
        namespace_labels={"kaito-py/nothing": name},
    )
    try:

        def run(now: dt.datetime, config: str = name) -> BootstrapResult:
            return bootstrap(
                api_client,
                namespace=namespace,
                service="kaito-webhook",
                secret="kaito-webhook-tls",
                webhook_configs=[config],
                now=now,
            )

        first = run(NOW)
        assert first.secret == "created"
        assert first.patched == (
            f"MutatingWebhookConfiguration/{name}",
            f"ValidatingWebhookConfiguration/{name}",
        )
        secret = client.CoreV1Api(api_client).read_namespaced_secret("kaito-webhook-tls", namespace)
        assert secret.type == "kubernetes.io/tls"
        adm = client.AdmissionregistrationV1Api(api_client)
        hooks = adm.read_mutating_webhook_configuration(name).webhooks
        assert hooks is not None
        assert secret.data is not None
        bundle = hooks[0].client_config.ca_bundle
        assert bundle == secret.data["ca.crt"]
        assert base64.b64decode(bundle).startswith(b"-----BEGIN CERTIFICATE-----")
        again = run(NOW)
        assert (again.secret, again.patched) == ("kept", ())
        later = run(NOW + dt.timedelta(days=340))
        assert (later.secret, later.patched) == ("renewed", ())
        with pytest.raises(LookupError, match="no Mutating- or ValidatingWebhookConfiguration"):
            run(NOW, "absent-" + name)
    finally:
        unregister_webhooks(api_client, name=name)
