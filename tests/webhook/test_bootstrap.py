"""`kaito webhook bootstrap` on a real apiserver: Secret created, kept, renewed; caBundle set;
a CA rotation keeps the old CA in the caBundle until the pods had time to serve the new one."""

from __future__ import annotations

import base64
import datetime as dt
import os
import ssl
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from rig.seeds import PHI3_INFERENCE, seed_object
from rig.webhook import register_webhooks, unregister_webhooks
from tests.support.cluster import Kubectl
from tests.support.webhook import start_server, stop_server
from webhook.bootstrap import (
    PREVIOUS_CA,
    PREVIOUS_CA_KEPT_FOR,
    ROTATED_AT,
    BootstrapResult,
    bootstrap,
    ca_bundle,
    plan_secret,
    service_hosts,
)
from webhook.certs import (
    CA_VALID_FOR,
    CERT_VALID_FOR,
    KeyPair,
    build_ca,
    build_certificate,
    certificate_hosts,
)

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


# --- CA rotation: the caBundle trusts the old CA until every pod serves the new one --------

HOSTS = service_hosts("kaito-webhook", "kaito-system")
# A CA this old is due for rotation now (it has less than a serving certificate's life left).
DUE_CA_BORN = NOW - (CA_VALID_FOR - CERT_VALID_FOR) - dt.timedelta(days=1)


def secret_data(ca: KeyPair, pair: KeyPair) -> dict[str, bytes]:
    return {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem, "tls.crt": pair.cert_pem,
            "tls.key": pair.key_pem}


def serving(data: dict[str, bytes]) -> KeyPair:
    return KeyPair(data["tls.crt"], data["tls.key"])


def handshake(tmp_path: Path, bundle: bytes, pair: KeyPair, host: str) -> None:
    """A real TLS handshake (in memory) of a client trusting `bundle` with a server serving
    `pair`; raises ssl.SSLCertVerificationError when the client refuses the certificate."""
    (tmp_path / "hs.crt").write_bytes(pair.cert_pem)
    (tmp_path / "hs.key").write_bytes(pair.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "hs.crt", tmp_path / "hs.key")
    client_ctx = ssl.create_default_context(cadata=bundle.decode())
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError(f"handshake did not finish: {done}")


def test_a_ca_rotation_keeps_the_old_ca_in_the_bundle_until_the_pods_had_time_to_swap(
    tmp_path: Path,
) -> None:
    old_ca = build_ca(now=DUE_CA_BORN)
    old = secret_data(old_ca, build_certificate(HOSTS, ca=old_ca, now=NOW))
    action, rotated = plan_secret(old, HOSTS, now=NOW)
    assert action == "ca-rotated"
    assert rotated["ca.crt"] != old["ca.crt"]
    assert rotated[PREVIOUS_CA] == old["ca.crt"]
    bundle = ca_bundle(rotated)
    assert bundle.count(b"-----BEGIN CERTIFICATE-----") == 2
    assert rotated["ca.crt"] in bundle
    assert old["ca.crt"] in bundle
    # pods not yet swapped serve the old certificate, swapped ones the new: both trusted
    handshake(tmp_path, bundle, serving(old), HOSTS[-2])
    handshake(tmp_path, bundle, serving(rotated), HOSTS[-2])
    with pytest.raises(ssl.SSLCertVerificationError):  # why the old CA must stay a while
        handshake(tmp_path, rotated["ca.crt"], serving(old), HOSTS[-2])
    # within the grace nothing changes; after it the old CA goes, and only from the bundle
    assert plan_secret(rotated, HOSTS, now=NOW + PREVIOUS_CA_KEPT_FOR / 2) == ("kept", rotated)
    action, done = plan_secret(rotated, HOSTS, now=NOW + PREVIOUS_CA_KEPT_FOR)
    assert action == "previous-ca-dropped"
    assert ca_bundle(done) == rotated["ca.crt"]
    assert {k: v for k, v in rotated.items() if k not in (PREVIOUS_CA, ROTATED_AT)} == done
    handshake(tmp_path, ca_bundle(done), serving(done), HOSTS[-2])
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tmp_path, ca_bundle(done), serving(old), HOSTS[-2])
    assert plan_secret(done, HOSTS, now=NOW + PREVIOUS_CA_KEPT_FOR) == ("kept", done)


def test_a_due_ca_waits_while_a_previous_ca_is_kept_and_an_expired_previous_goes_at_once() -> None:
    due_ca, older_ca = build_ca(now=DUE_CA_BORN), build_ca(now=NOW - dt.timedelta(days=30))
    data = secret_data(due_ca, build_certificate(HOSTS, ca=due_ca, now=NOW))
    pending = {**data, PREVIOUS_CA: older_ca.cert_pem, ROTATED_AT: NOW.isoformat().encode()}
    assert plan_secret(pending, HOSTS, now=NOW + dt.timedelta(minutes=5)) == ("kept", pending)
    later = NOW + PREVIOUS_CA_KEPT_FOR
    action, rotated = plan_secret(pending, HOSTS, now=later)
    assert action == "ca-rotated"
    assert rotated[PREVIOUS_CA] == due_ca.cert_pem  # the older one is gone, the due one kept
    assert rotated[ROTATED_AT] == later.isoformat().encode()
    expired = build_ca(now=NOW - dt.timedelta(days=20), valid_for=dt.timedelta(days=10))
    fresh_ca = build_ca(now=NOW)
    fresh = secret_data(fresh_ca, build_certificate(HOSTS, ca=fresh_ca, now=NOW))
    stale = {**fresh, PREVIOUS_CA: expired.cert_pem, ROTATED_AT: NOW.isoformat().encode()}
    assert plan_secret(stale, HOSTS, now=NOW) == ("previous-ca-dropped", fresh)


@pytest.mark.cluster
def test_a_ca_rotation_never_refuses_a_workspace_write_through_the_real_apiserver(
    api_client: client.ApiClient, namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The apiserver calls a real `kaito webhook serve` by URL (https://localhost:PORT) with
    the caBundle `bootstrap` writes; the server plays a pod whose mounted Secret the kubelet
    swaps late. Every Workspace write must be admitted: before the rotation, after it while
    the pod still serves the old certificate, after the swap, and after the old CA left."""
    core = client.CoreV1Api(api_client)
    hosts = service_hosts("localhost", namespace)  # the apiserver calls https://localhost
    old_ca = build_ca(now=DUE_CA_BORN)
    # 127.0.0.1 too, for start_server's readiness check; the renewed one has the hosts only
    old_pair = build_certificate([*hosts, "127.0.0.1"], ca=old_ca, now=NOW)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="kaito-webhook-tls"),
            type="kubernetes.io/tls",
            data={k: base64.b64encode(v).decode()
                  for k, v in secret_data(old_ca, old_pair).items()},
        ),
    )
    mounted = tmp_path / "certs"
    mounted.mkdir()
    for name, pem in (("ca.crt", old_ca.cert_pem), ("tls.key", old_pair.key_pem),
                      ("tls.crt", old_pair.cert_pem)):
        (mounted / name).write_bytes(pem)
    server = start_server(mounted, tmp_path / "server.log")
    mark = {"kaito-py/rotation": uuid.uuid4().hex[:12]}
    core.patch_namespace(namespace, {"metadata": {"labels": mark}})
    name = "kaito-rotation-" + mark["kaito-py/rotation"]
    register_webhooks(api_client, url=f"https://localhost:{server.port}",
                      ca_bundle=old_ca.cert_pem, name=name, namespace_labels=mark)
    try:

        def run(now: dt.datetime) -> BootstrapResult:
            return bootstrap(api_client, namespace=namespace, service="localhost",
                             secret="kaito-webhook-tls", webhook_configs=[name], now=now)

        def admitted(workspace: str) -> None:
            obj = seed_object(PHI3_INFERENCE)
            obj["metadata"]["name"] = workspace
            proc = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj),
                           check=False)
            assert proc.returncode == 0, proc.stderr

        def bundle() -> bytes:
            adm = client.AdmissionregistrationV1Api(api_client)
            found: set[bytes] = set()
            for config in (adm.read_mutating_webhook_configuration(name),
                           adm.read_validating_webhook_configuration(name)):
                for hook in config.webhooks or []:
                    found.add(base64.b64decode(str(hook.client_config.ca_bundle)))
            (only,) = found
            return only

        admitted("before-rotation")
        rotation = run(NOW)
        admitted("rotated-pod-not-yet-swapped")
        assert rotation.secret == "ca-rotated"
        stored = core.read_namespaced_secret("kaito-webhook-tls", namespace).data or {}
        new = {k: base64.b64decode(v) for k, v in stored.items()}
        assert bundle() == ca_bundle(new)
        assert old_ca.cert_pem in bundle()
        assert new["ca.crt"] in bundle()
        # the kubelet swaps the Secret into the pod: the server reloads on the next connection
        for key in ("tls.key", "tls.crt"):
            tmp = mounted / f".{key}.new"
            tmp.write_bytes(new[key])
            os.replace(tmp, mounted / key)
        served = ssl.get_server_certificate(("127.0.0.1", server.port)).encode()
        assert KeyPair(served, b"").cert == KeyPair(new["tls.crt"], b"").cert
        admitted("rotated-pod-swapped")
        assert run(NOW + PREVIOUS_CA_KEPT_FOR / 2).secret == "kept"
        assert bundle() == ca_bundle(new)
        done = run(NOW + PREVIOUS_CA_KEPT_FOR)
        assert done.secret == "previous-ca-dropped"
        assert bundle() == new["ca.crt"]
        admitted("old-ca-dropped")
    finally:
        unregister_webhooks(api_client, name=name)
        stop_server(server)
