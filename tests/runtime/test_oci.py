"""Adapters as OCI artifacts, against a real docker-registry with htpasswd basic auth."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from runtime import netcheck
from runtime.adapters import oci
from runtime.jobstep import PullDenied, PushDenied, RegistryError, TuneError
from tests.support.registry import LocalRegistry, running_registry

LOOPBACK = netcheck.Policy(allow_loopback=True)  # the registry runs on 127.0.0.1


@pytest.fixture(scope="module")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as registry:
        yield registry


def _adapter(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text('{"r": 8}')
    (directory / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
    return directory


def _creds(registry: LocalRegistry, password: str | None = None) -> oci.Credentials:
    return oci.Credentials(registry.username, registry.password if password is None else password)


def test_an_adapter_pushed_with_the_secret_pulls_back_byte_for_byte(
    oci_registry: LocalRegistry, tmp_path: Path
) -> None:
    source = _adapter(tmp_path / "adapter")
    ref = oci_registry.reference("adapters/roundtrip")
    secret = oci_registry.docker_config(tmp_path / "dockerconfig.json")
    creds = oci.credentials_from_dockerconfig(secret, oci.registry_host(ref))
    digest = oci.push_directory(source, ref, credentials=creds, plain_http=True, policy=LOOPBACK)
    assert digest.startswith("sha256:")

    pulled = oci.pull_directory(ref, tmp_path / "pulled", credentials=creds, plain_http=True,
                                policy=LOOPBACK)
    assert sorted(p.name for p in pulled) == ["adapter_config.json", "adapter_model.safetensors"]
    for path in pulled:
        assert path.read_bytes() == (source / path.name).read_bytes()


def test_the_manifest_has_the_documented_layout(
    oci_registry: LocalRegistry, tmp_path: Path
) -> None:
    ref = oci_registry.reference("adapters/layout", "v2")
    oci.push_directory(
        _adapter(tmp_path / "a"), ref, credentials=_creds(oci_registry), plain_http=True,
        policy=LOOPBACK,
    )
    response = requests.get(
        f"http://{oci_registry.host}/v2/adapters/layout/manifests/v2",
        auth=(oci_registry.username, oci_registry.password),
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    manifest = response.json()
    assert manifest["config"]["mediaType"] == "application/vnd.kaito.adapter.config.v1+json"
    assert manifest["annotations"]["sh.kaito.artifact"] == "adapter"
    assert [(x["mediaType"], x["annotations"][oci.TITLE]) for x in manifest["layers"]] == [
        ("application/vnd.kaito.adapter.file.v1", "adapter_config.json"),
        ("application/vnd.kaito.adapter.file.v1", "adapter_model.safetensors"),
    ]


def test_a_wrong_password_fails_with_the_registrys_own_error(
    oci_registry: LocalRegistry, tmp_path: Path
) -> None:
    ref = oci_registry.reference("adapters/denied")
    with pytest.raises(PushDenied) as info:
        oci.push_directory(
            _adapter(tmp_path / "a"),
            ref,
            credentials=_creds(oci_registry, "wrong"),
            plain_http=True, policy=LOOPBACK,
        )
    assert str(info.value) == (
        "push denied by registry: UNAUTHORIZED: authentication required "
        f"(HTTP 401 from {oci_registry.host})"
    )
    with pytest.raises(PullDenied, match="UNAUTHORIZED: authentication required"):
        oci.pull_directory(ref, tmp_path / "p", credentials=None, plain_http=True, policy=LOOPBACK)


def test_pulling_a_missing_tag_fails_clearly(oci_registry: LocalRegistry, tmp_path: Path) -> None:
    ref = oci_registry.reference("adapters/never-pushed")
    with pytest.raises(RegistryError, match="Not Found"):
        oci.pull_directory(ref, tmp_path / "p", credentials=_creds(oci_registry), plain_http=True,
                           policy=LOOPBACK)


def test_a_pull_over_the_size_limit_downloads_nothing(
    oci_registry: LocalRegistry, tmp_path: Path
) -> None:
    ref = oci_registry.reference("adapters/large")
    creds = _creds(oci_registry)
    oci.push_directory(_adapter(tmp_path / "a"), ref, credentials=creds, plain_http=True,
                       policy=LOOPBACK)
    with pytest.raises(RegistryError, match="over the limit of 100 bytes"):
        oci.pull_directory(ref, tmp_path / "p", credentials=creds, plain_http=True,
                           policy=LOOPBACK, max_bytes=100)
    assert not (tmp_path / "p").exists()


def test_an_unreachable_registry_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"cannot reach registry 127\.0\.0\.1:9"):
        oci.push_directory(_adapter(tmp_path / "a"), "127.0.0.1:9/x:v1", plain_http=True,
                           policy=LOOPBACK)


def test_directories_with_subfolders_or_nothing_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(TuneError, match="is empty"):
        oci.push_directory(tmp_path / "empty", "127.0.0.1:9/x:v1", plain_http=True, policy=LOOPBACK)
    (tmp_path / "nested" / "sub").mkdir(parents=True)
    with pytest.raises(TuneError, match=r"non-files \(sub\)"):
        oci.push_directory(tmp_path / "nested", "127.0.0.1:9/x:v1", plain_http=True,
                           policy=LOOPBACK)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param({"auth": base64.b64encode(b"u:p:w").decode()}, ("u", "p:w"), id="auth"),
        pytest.param({"username": "u", "password": "p"}, ("u", "p"), id="username-password"),
    ],
)
def test_dockerconfigjson_entries_give_credentials(
    tmp_path: Path, entry: dict[str, str], expected: tuple[str, str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"auths": {"https://myreg.example.com/v1/": entry}}))
    creds = oci.credentials_from_dockerconfig(path, "myreg.example.com")
    assert (creds.username, creds.password) == expected
    assert "p" not in repr(creds).replace("password=***", "")


def test_a_secret_without_the_registry_names_the_hosts_it_has(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"auths": {"a.example.com": {"auth": "dTpw"}}}))
    with pytest.raises(
        RegistryError, match=r"no credentials for b\.example\.com; it has: a\.example\.com"
    ):
        oci.credentials_from_dockerconfig(path, "b.example.com")


@pytest.mark.parametrize(
    ("reference", "host"),
    [
        ("127.0.0.1:5000/adapters/x:v1", "127.0.0.1:5000"),
        ("myacr.azurecr.io/a/b:0.0.1", "myacr.azurecr.io"),
        ("localhost/x:v1", "localhost"),
        ("library/ubuntu:22.04", "docker.io"),
    ],
)
def test_the_registry_host_of_a_reference(reference: str, host: str) -> None:
    assert oci.registry_host(reference) == host
