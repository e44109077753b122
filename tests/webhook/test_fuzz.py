"""Hypothesis feeds >= 10,000 generated AdmissionReviews and Workspaces: never a 500, never a
crash, every refusal names a field path, every patch is add-only and idempotent. Bodies
past the server's bounds (size, nesting, JSON's own rules) get exactly the 413 or 400 those
bounds promise; the examples each test ran are in the run's "Hypothesis examples" summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonpatch
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presets.catalog import Catalog
from rig.reviews import patch_ops, review
from tests.support.fuzzing import Long
from tests.support.webhook import Server
from tests.webhook.strategies import hostile, json_values, operations, workspaces
from webhook.admission import review_response
from webhook.app import MAX_DEPTH, create_app
from webhook.settings import Settings

FUZZ = settings(
    max_examples=1,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
Post = Callable[[str, dict[str, Any]], tuple[int, Any]]
LIMIT = Settings().max_body_bytes


def _depth(value: Any) -> int:
    """Levels of a JSON value, a scalar counting as one (iterative: values can be deep)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        todo.extend((child, level + 1) for child in children)
    return deepest


def _finite(value: Any) -> bool:
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, float) and item in (float("inf"), float("-inf")):
            return False
        todo.extend(item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ())
    return True


def expected_status(body: Any) -> int:
    """What the server promises for `body`: 413 over its size limit, 400 for what is not
    JSON (Infinity) or nests deeper than MAX_DEPTH, else a 200 with a decision."""
    if len(json.dumps(body).encode()) > LIMIT:
        return 413
    return 400 if not _finite(body) or _depth(body) > MAX_DEPTH else 200


def in_process(catalog: Catalog) -> tuple[FlaskClient, Post]:
    client = create_app(Settings(), catalog=catalog).test_client()

    def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        resp = client.post(path, data=json.dumps(body), content_type="application/json")
        return resp.status_code, resp.get_json()

    return client, post


def check_admission(post: Post, obj: dict[str, Any], old: dict[str, Any], operation: str) -> None:
    """Both endpoints answer 200 with the uid; denials name fields; patches add and settle."""
    sent = review(
        None if operation == "DELETE" else obj,
        operation=operation,
        old=old if operation in ("UPDATE", "DELETE") else None,
        uid="fuzz-uid",
    )
    status, body = post("/mutate", sent)
    expected = expected_status(sent)
    assert status == expected, body
    if expected != 200:
        assert body["error"], body
        status, body = post("/validate", sent)
        assert status == expected, body
        return
    response = body["response"]
    assert response["uid"] == "fuzz-uid"
    assert response["allowed"] is True, response
    ops = patch_ops(body)
    assert all(op["op"] == "add" for op in ops), ops
    if ops:
        expanded = jsonpatch.apply_patch(obj, ops)
        resent = {**sent, "request": {**sent["request"], "object": expanded}}
        status, again = post("/mutate", resent)
        # the expansion can push a body that was just under the size limit over it
        assert status == expected_status(resent), again
        if status == 200:
            assert patch_ops(again) == [], "a second mutation must add nothing"
    status, body = post("/validate", sent)
    assert status == 200, body
    check_validation(body["response"])


def check_validation(response: dict[str, Any]) -> None:
    assert response["uid"] == "fuzz-uid"
    if response["allowed"]:
        return
    status = response["status"]
    assert status["code"] == 422, status
    causes = status["details"]["causes"]
    assert causes, status
    for cause in causes:
        assert isinstance(cause["field"], str), cause
        assert cause["field"], cause
        assert f"{cause['field']}: " in status["message"]


def test_generated_workspaces_through_both_endpoints(catalog: Catalog) -> None:
    _, post = in_process(catalog)
    seen: list[int] = []

    @settings(FUZZ, max_examples=3000)
    @given(obj=workspaces, old=workspaces, operation=operations)
    def check(obj: dict[str, Any], old: dict[str, Any], operation: str) -> None:
        seen.append(1)
        check_admission(post, obj, old, operation)

    check()
    assert len(seen) >= 3000


def test_any_json_body_gets_a_200_answer_or_a_400_reason(catalog: Catalog) -> None:
    client, _ = in_process(catalog)
    seen: list[int] = []

    @settings(FUZZ, max_examples=3500)
    @given(
        body=json_values | hostile
        | st.builds(review, json_values | hostile, uid=st.just("fuzz-uid")),
        path=st.sampled_from(["/mutate", "/validate"]),
    )
    def check(body: Any, path: str) -> None:
        seen.append(1)
        resp = client.post(path, data=json.dumps(body), content_type="application/json")
        answer = resp.get_json()
        if expected_status(body) != 200:
            assert resp.status_code == expected_status(body), answer
            assert answer["error"], answer
        elif resp.status_code == 400:  # well-formed JSON that is no AdmissionReview
            assert answer["reason"]
        else:
            assert resp.status_code == 200, answer
            assert answer["response"]["uid"] == "fuzz-uid"

    check()
    assert len(seen) >= 3500


def test_any_bytes_get_a_400_never_a_crash(catalog: Catalog) -> None:
    client, _ = in_process(catalog)
    seen: list[int] = []

    @settings(FUZZ, max_examples=2500)
    @given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
           | st.integers(1, 200_000).map(lambda n: Long("[" * n + "]" * n))
           | st.integers(1, 200_000).map(lambda n: Long('{"a":' * n + "1" + "}" * n)))
    def check(raw: bytes | str) -> None:
        seen.append(1)
        resp = client.post("/validate", data=raw.encode() if isinstance(raw, str) else raw,
                           content_type="application/json")
        assert resp.status_code in (200, 400), resp.data

    check()
    assert len(seen) >= 2500


def test_the_pure_review_response_never_raises_on_envelopes(catalog: Catalog) -> None:
    seen: list[int] = []

    @settings(FUZZ, max_examples=1000)
    @given(obj=workspaces, junk=json_values | hostile,
           endpoint=st.sampled_from(["mutate", "validate"]))
    def check(obj: dict[str, Any], junk: Any, endpoint: Any) -> None:
        seen.append(1)
        for body in (review(obj), {**review(obj), "request": junk}, junk):
            outcome = review_response(body, endpoint=endpoint, catalog=catalog)
            assert outcome.http_status in (200, 400)
            assert outcome.result != "error"

    check()
    assert len(seen) >= 1000


def test_a_sample_over_real_https(https: requests.Session, server: Server) -> None:
    seen: list[int] = []

    def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        resp = https.post(
            server.url + path,
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        return resp.status_code, resp.json()

    @settings(FUZZ, max_examples=300)
    @given(obj=workspaces, old=workspaces, operation=operations)
    def check(obj: dict[str, Any], old: dict[str, Any], operation: str) -> None:
        seen.append(1)
        check_admission(post, obj, old, operation)

    check()
    assert len(seen) >= 300
