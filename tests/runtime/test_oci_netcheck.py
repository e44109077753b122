"""OCI pulls and pushes under the address rules (runtime.netcheck) and byte limits.

Every request the OCI code makes (the `/v2/` probe, the token endpoint, manifests, blobs,
upload locations, each redirect hop) is checked before a connection is opened, and bytes
are bounded by what actually arrives. The registries here are tiny HTTP servers on
127.0.0.1 that answer like a registry and record what they see; other addresses (10.x,
metadata) only ever appear through an injected resolver or in a redirect, and the tests
record every connection the client opens to show nothing but loopback was ever contacted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests.adapters
import urllib3.util.connection

from runtime import netcheck
from runtime.adapters import oci
from runtime.adapters.__main__ import main as oci_main
from runtime.jobstep import TERMINATION_LOG_ENV, RegistryError
from runtime.weights import WeightsError, WeightsSettings
from runtime.weights.registry import pull_model
from webhook.certs import build_ca, build_certificate

LOOPBACK = netcheck.Policy(allow_loopback=True)
EVERYTHING = netcheck.Policy(allow_loopback=True, allow_private=True)
CONTENT = b'{"r": 8, "lora_alpha": 16}'
CONFIG = b'{"architectures": ["X"]}'
METADATA = "169.254.169.254"


@dataclass
class Artifact:
    """What a fake registry serves, and how it misbehaves."""

    files: dict[str, bytes] = field(default_factory=lambda: {"adapter_config.json": CONTENT})
    sizes: dict[str, int] = field(default_factory=dict)  # manifest size != real size
    send_extra: bytes = b""  # appended to the blob of the file named `extra_for`
    extra_for: str = "adapter_model.safetensors"
    content_length: bool = True
    blob_redirect: str | None = None  # a blob GET answers 307 to here + path
    challenge: str | None = None  # /v2/ and manifests answer 401 with this challenge
    upload_location: str | None = None  # POST .../blobs/uploads/ answers 202 to here
    manifest_padding: int = 0
    seen: list[str] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)  # the Host headers received

    def layers(self) -> list[dict[str, Any]]:
        return [{"mediaType": "application/vnd.kaito.adapter.file.v1",
                 "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                 "size": self.sizes.get(name, len(body)),
                 "annotations": {oci.TITLE: name}} for name, body in self.files.items()]

    def manifest(self) -> bytes:
        body: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.kaito.adapter.config.v1+json",
                       "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2},
            "layers": self.layers()}
        if self.manifest_padding:
            body["annotations"] = {"padding": "x" * self.manifest_padding}
        return json.dumps(body).encode()

    def blob(self, digest: str) -> bytes | None:
        return next((body + (self.send_extra if name == self.extra_for else b"")
                     for name, body in self.files.items()
                     if "sha256:" + hashlib.sha256(body).hexdigest() == digest), None)


class _Handler(BaseHTTPRequestHandler):
    """A registry's answers for `artifact` (set on a subclass per server)."""

    protocol_version = "HTTP/1.1"
    artifact: Artifact

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        if self.artifact.content_length or status != 200:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self.artifact.seen.append(f"GET {self.path}")
        self.artifact.hosts.add(self.headers.get("Host", ""))
        if self.artifact.challenge and "/blobs/" not in self.path:
            self._send(401, b'{"errors": []}', WWW_Authenticate=self.artifact.challenge)
        elif self.path == "/v2/":
            self._send(200, b"{}")
        elif "/manifests/" in self.path:
            self._manifest()
        elif "/blobs/" in self.path:
            self._blob()
        else:
            self._send(404)

    def _manifest(self) -> None:
        body = self.artifact.manifest()
        self._send(200, body, Content_Type="application/vnd.oci.image.manifest.v1+json",
                   Docker_Content_Digest="sha256:" + hashlib.sha256(body).hexdigest())

    def _blob(self) -> None:
        if self.artifact.blob_redirect:
            self._send(307, b"", Location=self.artifact.blob_redirect + self.path)
            return
        blob = self.artifact.blob(self.path.rsplit("/", 1)[1])
        if blob is None:
            self._send(404, b'{"errors": [{"code": "BLOB_UNKNOWN", "message": "no"}]}')
        else:
            self._send(200, blob)

    def do_HEAD(self) -> None:
        self.artifact.seen.append(f"HEAD {self.path}")
        self._send(404)

    def do_POST(self) -> None:
        self.artifact.seen.append(f"POST {self.path}")
        self._send(202, b"", Location=f"{self.artifact.upload_location}/upload/1")

    def log_message(self, format: str, *args: object) -> None:
        return


def _handler(artifact: Artifact) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"artifact": artifact})


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that stops reading (a refused blob) is what these tests do."""


Serve = Callable[..., str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start fake registries on 127.0.0.1 (HTTPS with `tls`); each call returns host:port."""
    servers: list[ThreadingHTTPServer] = []

    def start(artifact: Artifact, tls: ssl.SSLContext | None = None) -> str:
        httpd = _Server(("127.0.0.1", 0), _handler(artifact))
        if tls is not None:
            httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (address, port) the HTTP client connects to; only loopback is let through,
    anything else fails as a refused connection without a packet being sent."""
    made: list[tuple[str, int]] = []
    real = urllib3.util.connection.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        made.append((address[0], int(address[1])))
        if address[0] != "127.0.0.1":
            raise ConnectionRefusedError(f"the test lets no connection reach {address[0]}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    return made


def _no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} must not be resolved")


def test_a_loopback_registry_is_refused_before_any_request(
    serve: Serve, connections: list[tuple[str, int]], tmp_path: Path,
) -> None:
    artifact = Artifact()
    host = serve(artifact)
    port = host.split(":")[1]
    with pytest.raises(RegistryError) as info:
        oci.pull_directory(f"{host}/a/b:v1", tmp_path / "d", plain_http=True)
    assert str(info.value) == f"registry error: registry {host} refused: a loopback address"
    with pytest.raises(RegistryError, match=r"refused: the local machine$"):
        oci.pull_directory(f"localhost:{port}/a/b:v1", tmp_path / "d", plain_http=True,
                           resolver=_no_resolver)
    source = tmp_path / "src"
    source.mkdir()
    (source / "adapter_config.json").write_bytes(CONTENT)
    with pytest.raises(RegistryError, match="refused: a loopback address"):
        oci.push_directory(source, f"{host}/a/b:v1", plain_http=True)
    with pytest.raises(RegistryError, match="refused: a loopback address"):
        pull_model(f"oci://{host}/a/b:v1", WeightsSettings(cache=tmp_path / "c", plain_http=True),
                   _log())
    assert artifact.seen == []
    assert connections == []
    assert not (tmp_path / "d").exists()
    # With the tests' switch the same registry serves the artifact.
    pulled = oci.pull_directory(f"{host}/a/b:v1", tmp_path / "d", plain_http=True,
                                policy=LOOPBACK)
    assert [p.read_bytes() for p in pulled] == [CONTENT]


def test_https_goes_to_the_checked_address_and_still_verifies_the_registrys_name(
    serve: Serve, connections: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    now = dt.datetime.now(dt.UTC)
    ca = build_ca(now=now)
    pair = build_certificate(["registry.test"], ca=ca, now=now)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "cert.pem").write_bytes(pair.cert_pem)
    (tmp_path / "key.pem").write_bytes(pair.key_pem)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    # Only the trust anchors change: requests verifies against this CA instead of certifi's.
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", str(tmp_path / "ca.pem"))
    artifact = Artifact()
    port = int(serve(artifact, tls).split(":")[1])

    def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    pulled = oci.pull_directory(f"registry.test:{port}/a/b:v1", tmp_path / "d",
                                policy=LOOPBACK, resolver=resolver)
    assert [p.read_bytes() for p in pulled] == [CONTENT]
    assert set(connections) == {("127.0.0.1", port)}
    assert artifact.hosts == {f"registry.test:{port}"}
    with pytest.raises(RegistryError, match=(
            r"cannot reach registry other\.test:\d+: .*hostname 'other\.test' doesn't match")):
        oci.pull_directory(f"other.test:{port}/a/b:v1", tmp_path / "e", policy=LOOPBACK,
                           resolver=resolver)


def test_the_adapter_puller_reads_the_switch_from_its_environment(
    serve: Serve, tmp_path: Path,
) -> None:
    artifact = Artifact()
    host = serve(artifact)
    log = tmp_path / "termination-log"
    argv = ["pull", f"{host}/a/b:v1", str(tmp_path / "d"), "--plain-http"]
    assert oci_main(argv, {TERMINATION_LOG_ENV: str(log)}) == 1
    assert log.read_text() == f"registry error: registry {host} refused: a loopback address\n"
    assert artifact.seen == []
    env = {TERMINATION_LOG_ENV: str(log), netcheck.ALLOW_LOOPBACK_ENV: "1"}
    assert oci_main(argv, env) == 0
    assert (tmp_path / "d" / "adapter_config.json").read_bytes() == CONTENT


def test_metadata_is_refused_whatever_is_allowed(
    connections: list[tuple[str, int]], tmp_path: Path,
) -> None:
    with pytest.raises(RegistryError) as info:
        oci.pull_directory(f"{METADATA}/x:v1", tmp_path / "d", policy=EVERYTHING,
                           resolver=_no_resolver)
    assert str(info.value) == (
        f"registry error: registry {METADATA} refused: a cloud metadata address")
    with pytest.raises(RegistryError, match=(
            r"registry meta\.example\.com refused: it resolves to 169\.254\.169\.254, "
            r"a cloud metadata address")):
        oci.pull_directory("meta.example.com/x:v1", tmp_path / "d", policy=EVERYTHING,
                           resolver=lambda h, p: [METADATA])
    with pytest.raises(RegistryError, match="refused: a cloud metadata endpoint"):
        oci.pull_directory("metadata.google.internal/x:v1", tmp_path / "d", policy=EVERYTHING,
                           resolver=_no_resolver)
    assert connections == []


def test_a_private_registry_needs_the_operators_setting(
    connections: list[tuple[str, int]], tmp_path: Path,
) -> None:
    def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("registry.internal", 5000)
        return ["10.1.2.3"]

    ref = "registry.internal:5000/adapters/x:v1"
    with pytest.raises(RegistryError) as info:
        oci.pull_directory(ref, tmp_path / "d", plain_http=True, resolver=resolver)
    assert str(info.value) == (
        "registry error: registry registry.internal:5000 refused: it resolves to 10.1.2.3, "
        "a private address (an operator may allow registries inside the cluster with "
        "KAITO_OCI_ALLOW_PRIVATE=1)")
    assert connections == []
    allowed = netcheck.oci_policy({netcheck.ALLOW_PRIVATE_ENV: "1"})
    assert allowed == netcheck.Policy(allow_private=True)
    # Allowed: the client connects to the checked address (the test stops it there).
    with pytest.raises(RegistryError, match=r"cannot reach registry registry\.internal:5000"):
        oci.pull_directory(ref, tmp_path / "d", plain_http=True, policy=allowed,
                           resolver=resolver)
    assert connections == [("10.1.2.3", 5000)]


def test_the_private_setting_never_admits_loopback_link_local_or_metadata() -> None:
    def problem(address: str) -> str | None:
        return netcheck.address_problem(address, allow_loopback=False, allow_private=True)

    assert [problem(a) for a in ("10.0.0.1", "172.16.5.4", "192.168.1.1", "fd12::1")] == [
        None, None, None, None]
    assert problem("127.0.0.1") == "a loopback address"
    assert problem("169.254.3.4") == "a link-local address"
    assert problem("fe80::1") == "a link-local address"
    assert problem(METADATA) == "a cloud metadata address"
    assert problem("fd00:ec2::254") == "a cloud metadata address"
    assert problem("100.64.0.1") == "a non-public address"
    assert problem("198.18.0.1") == "a private address"  # benchmarking range: never
    assert netcheck.oci_policy({}) == netcheck.STRICT


def test_a_blob_redirect_to_the_metadata_address_is_refused_without_connecting(
    serve: Serve, connections: list[tuple[str, int]], tmp_path: Path,
) -> None:
    artifact = Artifact(blob_redirect=f"http://{METADATA}")
    host = serve(artifact)
    with pytest.raises(RegistryError) as info:
        oci.pull_directory(f"{host}/a/b:v1", tmp_path / "d", plain_http=True, policy=EVERYTHING)
    assert str(info.value) == (
        f"registry error: registry {host} refused: it sent the client to {METADATA}, "
        "a cloud metadata address")
    assert [a for a, _ in connections] == ["127.0.0.1"] * len(connections)
    assert any("/blobs/" in line for line in artifact.seen)
    assert list((tmp_path / "d").iterdir()) == []


def test_a_redirect_to_a_private_name_is_refused_and_to_an_allowed_one_followed(
    serve: Serve, connections: list[tuple[str, int]], tmp_path: Path,
) -> None:
    storage = Artifact()
    storage_host = serve(storage)
    artifact = Artifact(blob_redirect="http://storage.internal")
    host = serve(artifact)
    with pytest.raises(RegistryError, match=(
            r"it sent the client to storage\.internal, which resolves to 10\.9\.8\.7, "
            r"a private address")):
        oci.pull_directory(f"{host}/a/b:v1", tmp_path / "d", plain_http=True, policy=LOOPBACK,
                           resolver=lambda h, p: ["10.9.8.7"])
    assert all(a == "127.0.0.1" for a, _ in connections)
    followed = Artifact(blob_redirect=f"http://{storage_host}")
    pulled = oci.pull_directory(f"{serve(followed)}/a/b:v1", tmp_path / "ok", plain_http=True,
                                policy=LOOPBACK)
    assert [p.read_bytes() for p in pulled] == [CONTENT]
    assert [line.split(" ")[0] for line in storage.seen] == ["GET"]


def test_a_token_realm_on_the_metadata_address_is_refused(
    serve: Serve, connections: list[tuple[str, int]], tmp_path: Path,
) -> None:
    artifact = Artifact(challenge=f'Bearer realm="http://{METADATA}/token",service="r"')
    host = serve(artifact)
    with pytest.raises(RegistryError, match=(
            f"registry {host} refused: it sent the client to {METADATA}, "
            "a cloud metadata address")):
        oci.pull_directory(f"{host}/a/b:v1", tmp_path / "d", plain_http=True, policy=LOOPBACK)
    assert all(a == "127.0.0.1" for a, _ in connections)


def test_an_upload_location_on_the_metadata_address_is_refused(
    serve: Serve, connections: list[tuple[str, int]], tmp_path: Path,
) -> None:
    artifact = Artifact(upload_location=f"http://{METADATA}")
    host = serve(artifact)
    source = tmp_path / "src"
    source.mkdir()
    (source / "adapter_config.json").write_bytes(CONTENT)
    with pytest.raises(RegistryError, match=f"it sent the client to {METADATA}, a cloud"):
        oci.push_directory(source, f"{host}/a/b:v1", plain_http=True, policy=LOOPBACK)
    assert any(line.startswith("POST") for line in artifact.seen)
    assert all(a == "127.0.0.1" for a, _ in connections)


@pytest.mark.parametrize("content_length", [True, False], ids=["announced", "streamed"])
def test_a_blob_longer_than_its_manifest_size_is_refused_and_removed(
    serve: Serve, tmp_path: Path, content_length: bool,
) -> None:
    big = b"x" * (3 << 20)
    artifact = Artifact(files={"adapter_config.json": CONTENT, "adapter_model.safetensors": big},
                        send_extra=b"y" * (1 << 20), content_length=content_length)
    host = serve(artifact)
    with pytest.raises(RegistryError) as info:
        oci.pull_directory(f"{host}/a/b:v1", tmp_path / "d", plain_http=True, policy=LOOPBACK)
    if content_length:
        assert str(info.value).endswith(
            f"adapter_model.safetensors: the registry announced {len(big) + (1 << 20)} bytes; "
            f"the manifest says {len(big)}")
    else:
        assert str(info.value).endswith(
            f"adapter_model.safetensors: the registry sent more than the manifest's {len(big)} "
            "bytes")
    assert not (tmp_path / "d" / "adapter_model.safetensors").exists()


def test_a_manifest_that_understates_a_file_is_caught_by_the_bytes_received(
    serve: Serve, tmp_path: Path,
) -> None:
    artifact = Artifact(sizes={"adapter_config.json": 5}, content_length=False)
    assert len(CONTENT) > 5
    host = serve(artifact)
    with pytest.raises(RegistryError, match="sent more than the manifest's 5 bytes"):
        oci.pull_directory(f"{host}/a/b:v1", tmp_path / "d", plain_http=True, policy=LOOPBACK,
                           max_bytes=10)
    assert list((tmp_path / "d").iterdir()) == []


def test_a_manifest_over_4_mib_is_refused(
    serve: Serve, tmp_path: Path,
) -> None:
    host = serve(Artifact(manifest_padding=5 << 20))
    with pytest.raises(RegistryError, match=r"sent a response of more than 4194304 bytes"):
        oci.pull_directory(f"{host}/a/b:v1", tmp_path / "d", plain_http=True, policy=LOOPBACK)
    settings = WeightsSettings(cache=tmp_path / "c", plain_http=True, net=LOOPBACK)
    with pytest.raises(RegistryError, match=r"sent a response of more than 4194304 bytes"):
        pull_model(f"oci://{host}/a/b:v1", settings, _log())


def test_the_weights_pullers_limit_comes_from_the_environment(
    serve: Serve, tmp_path: Path,
) -> None:
    host = serve(Artifact(files={"config.json": CONFIG}))
    env = {"KAITO_WEIGHTS_CACHE": str(tmp_path / "c"), "KAITO_WEIGHTS_PLAIN_HTTP": "1",
           netcheck.ALLOW_LOOPBACK_ENV: "1", "KAITO_OCI_MAX_BYTES": "10"}
    settings = WeightsSettings.from_env(env)
    assert (settings.net, settings.max_oci_bytes) == (LOOPBACK, 10)
    with pytest.raises(RegistryError, match=f"is {len(CONFIG)} bytes, over the limit of 10"):
        pull_model(f"oci://{host}/m:v1", settings, _log())
    assert WeightsSettings.from_env({**env, "KAITO_OCI_MAX_BYTES": ""}).max_oci_bytes == 1 << 40
    with pytest.raises(WeightsError, match="KAITO_OCI_MAX_BYTES='-1'"):
        WeightsSettings.from_env({**env, "KAITO_OCI_MAX_BYTES": "-1"})
    path, fetched = pull_model(f"oci://{host}/m:v1", WeightsSettings.from_env(
        {**env, "KAITO_OCI_MAX_BYTES": "1000"}), _log())
    assert fetched
    assert (path / "config.json").read_bytes() == CONFIG


def test_layer_sizes_and_digests_must_be_well_formed() -> None:
    good = Artifact().layers()[0]
    for bad, message in (({"size": "12"}, "no valid size"), ({"size": -1}, "no valid size"),
                         ({"size": True}, "no valid size"), ({"digest": "md5:00"}, "digest")):
        with pytest.raises(RegistryError, match=message):
            oci.checked_layers({"layers": [{**good, **bad}]}, "r/x:v1", 1 << 20)
    with pytest.raises(RegistryError, match="same file name"):
        oci.checked_layers({"layers": [good, good]}, "r/x:v1", 1 << 20)


def _log() -> Any:
    import logging

    return logging.getLogger("test.oci.netcheck")
