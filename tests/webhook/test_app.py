"""The Flask app in-process: the 500 channel, warnings, settings (no server needed)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import pytest
from flask.testing import FlaskClient

from crds.workspace import ANNOTATION_BYPASS, ANNOTATION_CATALOG_REVISION
from presets.catalog import Catalog
from rig.reviews import phi3, review
from webhook.app import create_app
from webhook.settings import Settings, SettingsError


def client_for(catalog: Catalog, **settings: Any) -> FlaskClient:
    return create_app(Settings(**settings), catalog=catalog).test_client()


def answer(client: FlaskClient, path: str, body: Any) -> dict[str, Any]:
    resp = client.post(path, data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 200
    return cast(dict[str, Any], resp.get_json())


class ExplodingCatalog:
    """Stands in for a catalog whose lookups fail with an unexpected error."""

    revision = "boom"

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("secret internal detail /etc/passwd")


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
def test_an_unexpected_exception_is_a_500_denial_with_a_generic_message(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_app(Settings(), catalog=cast(Catalog, ExplodingCatalog())).test_client()
    with caplog.at_level(logging.ERROR, logger="kaito.webhook"):
        body = answer(client, path, review(phi3(), uid="u-500"))
    response = body["response"]
    assert response["uid"] == "u-500"
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "secret internal detail" not in json.dumps(body)
    assert "RuntimeError: secret internal detail" in caplog.text
    assert "u-500" in caplog.text


def test_v1alpha1_is_not_called_deprecated_by_default(catalog: Catalog) -> None:
    body = answer(client_for(catalog), "/validate", review(phi3()))
    assert not any("deprecated" in w for w in body["response"].get("warnings", []))


def test_a_version_listed_as_deprecated_gets_a_warning(catalog: Catalog) -> None:
    client = client_for(catalog, deprecated_versions=frozenset({"v1alpha1"}))
    body = answer(client, "/validate", review(phi3()))
    assert (
        "kaito.sh/v1alpha1 Workspace is deprecated; use kaito.sh/v1beta1"
        in body["response"]["warnings"]
    )


def test_the_bypass_annotation_and_a_stale_catalog_revision_are_warned_about(
    catalog: Catalog,
) -> None:
    obj = phi3(
        metadata={
            "name": "w",
            "annotations": {
                ANNOTATION_BYPASS: "true",
                ANNOTATION_CATALOG_REVISION: "older-revision",
            },
        }
    )
    warnings = answer(client_for(catalog), "/validate", review(obj))["response"]["warnings"]
    assert any(ANNOTATION_BYPASS in w for w in warnings)
    assert any("older-revision" in w for w in warnings)


def test_a_small_body_limit_from_settings_gives_413(catalog: Catalog) -> None:
    client = client_for(catalog, max_body_bytes=2048)
    resp = client.post(
        "/mutate",
        data=json.dumps(review(phi3(metadata={"name": "x" * 4000}))),
        content_type="application/json",
    )
    assert resp.status_code == 413


def test_readyz_is_503_while_the_cert_dir_has_no_certificate(
    catalog: Catalog, tmp_path: Path
) -> None:
    client = client_for(catalog, cert_dir=tmp_path)
    assert client.get("/readyz").status_code == 503


def test_settings_report_every_bad_variable_at_once(tmp_path: Path) -> None:
    env = {
        "KAITO_WEBHOOK_MAX_BODY_BYTES": "lots",
        "KAITO_WEBHOOK_LOG_LEVEL": "loud",
        "KAITO_WEBHOOK_CERT_DIR": str(tmp_path / "absent"),
        "KAITO_WEBHOOK_CATALOG_MODELS": str(tmp_path / "models.yaml"),
        "KAITO_WEBHOOK_DEPRECATED_VERSIONS": "v1alpha1,v2",
        "KAITO_PROVISIONER": "cloud",
    }
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    names = [p.split("=")[0].split(":")[0] for p in caught.value.problems]
    assert names == [
        "KAITO_WEBHOOK_MAX_BODY_BYTES",
        "KAITO_WEBHOOK_LOG_LEVEL",
        "KAITO_WEBHOOK_DEPRECATED_VERSIONS",
        "KAITO_PROVISIONER",
        "KAITO_WEBHOOK_CATALOG_MODELS",
        "KAITO_WEBHOOK_CERT_DIR",
    ]


def test_settings_from_a_good_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "KAITO_WEBHOOK_MAX_BODY_BYTES": "65536",
            "KAITO_WEBHOOK_CERT_DIR": str(tmp_path),
            "KAITO_WEBHOOK_DEPRECATED_VERSIONS": " v1alpha1 ,",
            "KAITO_WEBHOOK_LOG_LEVEL": "debug",
            "KAITO_PROVISIONER": " BYO ",
        }
    )
    assert settings == Settings(
        max_body_bytes=65536,
        cert_dir=tmp_path,
        log_level="DEBUG",
        deprecated_versions=frozenset({"v1alpha1"}),
        provisioner="byo",
    )
    assert Settings.from_env({}).provisioner == "karpenter"


def selector_only() -> dict[str, Any]:
    """The seed's phi-3 Workspace naming its nodes by labelSelector alone (no instanceType)."""
    obj = phi3()
    del obj["resource"]["instanceType"]
    return obj


def test_a_byo_install_admits_a_workspace_without_instance_type_or_annotation(
    catalog: Catalog,
) -> None:
    body = answer(client_for(catalog, provisioner="byo"), "/validate", review(selector_only()))
    assert body["response"]["allowed"] is True, body["response"]


@pytest.mark.parametrize("provisioner", ["karpenter", "aks"])
def test_a_provisioning_install_still_requires_an_instance_type(
    catalog: Catalog, provisioner: str
) -> None:
    client = client_for(catalog, provisioner=provisioner)
    body = answer(client, "/validate", review(selector_only()))
    assert body["response"]["allowed"] is False
    assert "resource.instanceType" in body["response"]["status"]["message"]
    annotated = selector_only()
    annotated["metadata"]["annotations"] = {"kaito.sh/provisioner": "byo"}
    body = answer(client, "/validate", review(annotated))
    assert body["response"]["allowed"] is True, body["response"]
