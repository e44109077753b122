"""The real server (gunicorn, TLS) answers AdmissionReviews over HTTPS with the CA it made."""

from __future__ import annotations

import json
from typing import Any

import jsonpatch
import pytest
import requests

from presets.catalog import Catalog
from presets.validate import validate_object
from rig.reviews import PHI3, patch_ops, phi3, review
from tests.support.webhook import Server

JSON = {"Content-Type": "application/json"}


def post(https: requests.Session, server: Server, path: str, body: Any) -> requests.Response:
    return https.post(server.url + path, data=json.dumps(body), headers=JSON, timeout=10)


def test_the_seed_phi3_workspace_gets_a_patch_that_adds_resource_count(
    https: requests.Session, server: Server
) -> None:
    sent = review(phi3(), uid="phi3-uid-1")
    resp = post(https, server, "/mutate", sent)
    assert resp.status_code == 200
    body = resp.json()
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == "phi3-uid-1"
    assert body["response"]["allowed"] is True
    ops = patch_ops(body)
    assert {op["op"] for op in ops} == {"add"}
    assert {"op": "add", "path": "/resource/count", "value": 1} in ops


def test_applying_the_patch_and_mutating_again_yields_no_patch(
    https: requests.Session, server: Server
) -> None:
    first = post(https, server, "/mutate", review(phi3())).json()
    expanded = jsonpatch.apply_patch(PHI3, patch_ops(first))
    again = post(https, server, "/mutate", review(expanded)).json()
    assert again["response"]["allowed"] is True
    assert "patch" not in again["response"]
    assert "patchType" not in again["response"]
    validated = post(https, server, "/validate", review(expanded)).json()
    assert validated["response"]["allowed"] is True


def test_a_v1beta1_review_is_answered_in_v1beta1(https: requests.Session, server: Server) -> None:
    body = post(
        https, server, "/mutate", review(phi3(), api_version="admission.k8s.io/v1beta1")
    ).json()
    assert body["apiVersion"] == "admission.k8s.io/v1beta1"
    assert patch_ops(body)


def invalid_workspace() -> dict[str, Any]:
    return phi3(
        resource={"instanceType": "Standard_Nope_v9", "labelSelector": {"matchLabels": {"a": "b"}}},
        inference={
            "preset": {"name": "phi-3-mini-4k-instructt"},
            "adapters": [{"source": {"name": "x", "image": "r.io/x:1"}, "strength": "7"}],
        },
    )


def test_an_invalid_workspace_is_refused_with_every_field_error(
    https: requests.Session, server: Server, catalog: Catalog
) -> None:
    obj = invalid_workspace()
    expected = validate_object(obj, catalog)
    assert len(expected) >= 2
    body = post(https, server, "/validate", review(obj, uid="bad-1")).json()
    response = body["response"]
    assert response["uid"] == "bad-1"
    assert response["allowed"] is False
    status = response["status"]
    assert status["code"] == 422
    causes = [(c["field"], c["reason"]) for c in status["details"]["causes"]]
    assert causes == [(e.path, "FieldValue" + e.type) for e in expected]
    assert {"resource.instanceType", "inference.preset.name"} <= {c[0] for c in causes}
    for error in expected:
        assert str(error) in status["message"]


def test_an_update_that_changes_an_immutable_field_is_refused(
    https: requests.Session, server: Server
) -> None:
    old = phi3()
    new = phi3(resource={**PHI3["resource"], "instanceType": "Standard_NC24ads_A100_v4"})
    body = post(https, server, "/validate", review(new, operation="UPDATE", old=old)).json()
    assert body["response"]["allowed"] is False
    fields = [c["field"] for c in body["response"]["status"]["details"]["causes"]]
    assert "resource.instanceType" in fields


def test_delete_is_allowed(https: requests.Session, server: Server) -> None:
    body = post(https, server, "/validate", review(None, operation="DELETE", old=phi3())).json()
    assert body["response"] == {"uid": body["response"]["uid"], "allowed": True}


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


MALFORMED = [
    pytest.param(b"\x00\xff garbage", id="garbage-bytes"),
    pytest.param(json.dumps(review(phi3()))[:-40].encode(), id="truncated-json"),
    pytest.param(b"", id="empty-body"),
    pytest.param(b"[1, 2]", id="json-array"),
    pytest.param(b"NaN", id="nan-constant"),
    pytest.param(_deep(50_000).encode(), id="nested-50000-deep"),
    pytest.param(_deep(150).encode(), id="nested-150-deep"),
    pytest.param(json.dumps({**review(phi3()), "kind": "Pod"}).encode(), id="kind-pod"),
    pytest.param(
        json.dumps({**review(phi3()), "apiVersion": "v1"}).encode(), id="wrong-api-version"
    ),
    pytest.param(json.dumps({**review(phi3()), "request": None}).encode(), id="no-request"),
    pytest.param(
        json.dumps(
            review(phi3(), uid="x")
            | {
                "request": {
                    **review(phi3())["request"],
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                }
            }
        ).encode(),
        id="request-kind-pod",
    ),
    pytest.param(
        json.dumps(
            {
                **review(phi3()),
                "request": {k: v for k, v in review(phi3())["request"].items() if k != "uid"},
            }
        ).encode(),
        id="missing-uid",
    ),
    pytest.param(
        json.dumps(
            {**review(phi3()), "request": {**review(phi3())["request"], "uid": ""}}
        ).encode(),
        id="empty-uid",
    ),
    pytest.param(
        json.dumps(
            {**review(phi3()), "request": {**review(phi3())["request"], "object": "x"}}
        ).encode(),
        id="object-not-a-map",
    ),
    pytest.param(
        json.dumps(review(phi3(), operation="UPDATE")).encode(),
        id="update-without-old-object",
    ),
]


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
@pytest.mark.parametrize("payload", MALFORMED)
def test_a_malformed_review_gets_400_with_a_json_reason(
    https: requests.Session, server: Server, path: str, payload: bytes
) -> None:
    resp = https.post(server.url + path, data=payload, headers=JSON, timeout=10)
    assert resp.status_code == 400
    assert resp.json()["reason"]


def test_a_body_that_is_not_json_content_type_gets_400(
    https: requests.Session, server: Server
) -> None:
    resp = https.post(
        server.url + "/validate",
        data=json.dumps(review(phi3())),
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )
    assert resp.status_code == 400
    assert "Content-Type" in resp.json()["reason"]


def test_a_body_over_the_limit_gets_413(https: requests.Session, server: Server) -> None:
    big = review(phi3(metadata={"name": "x", "annotations": {"pad": "x" * (4 * 1024 * 1024)}}))
    resp = https.post(server.url + "/mutate", data=json.dumps(big), headers=JSON, timeout=30)
    assert resp.status_code == 413
    assert resp.json()["limit_bytes"] == 3 * 1024 * 1024


def test_a_get_on_an_admission_path_is_405_not_500(https: requests.Session, server: Server) -> None:
    assert https.get(server.url + "/mutate", timeout=10).status_code == 405


def test_probes_and_metrics_answer(https: requests.Session, server: Server) -> None:
    assert https.get(server.url + "/healthz", timeout=10).text == "ok\n"
    assert https.get(server.url + "/readyz", timeout=10).text.startswith("ready")
    post(https, server, "/validate", review(invalid_workspace()))
    metrics = https.get(server.url + "/metrics", timeout=10).text
    assert 'kaito_webhook_requests_total{endpoint="validate",result="denied"}' in metrics
    assert 'kaito_webhook_request_duration_seconds_bucket{endpoint="validate"' in metrics
    assert 'kaito_webhook_denials_total{endpoint="validate",reason="NotSupported"}' in metrics


def test_the_server_presents_a_certificate_for_127_0_0_1_signed_by_its_ca(server: Server) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url + "/healthz", timeout=10)
    assert requests.get(server.url + "/healthz", verify=str(server.ca), timeout=10).ok
