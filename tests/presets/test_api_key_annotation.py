"""`kaito.sh/api-key-secret`: admitted only as a Secret name, on a Workspace whose model
server the operator builds (issue L, "the model API can require a bearer token").

Before the annotation existed every value passed unnoticed; a Workspace must never look
protected while nothing checks the key (a tuning Workspace, or one with its own pod template).
"""

from __future__ import annotations

from typing import Any

import pytest

from crds.workspace import ANNOTATION_API_KEY_SECRET, API_KEY_SECRET_KEY, parse_workspace
from presets.catalog import Catalog
from presets.validate import validate_object
from presets.validate.annotations import check_annotations
from tests.presets.factories import inference_ws, tuning_ws

PATH = f"metadata.annotations[{ANNOTATION_API_KEY_SECRET}]"
Doc = dict[str, Any]


def _with(ws: Doc, value: str) -> Doc:
    ws["metadata"]["annotations"] = {ANNOTATION_API_KEY_SECRET: value}
    return ws


def _errors(ws: Doc, catalog: Catalog) -> list[tuple[str, str, str]]:
    return [(e.path, e.type, e.message) for e in validate_object(ws, catalog)
            if e.path == PATH]


def test_the_annotation_key_and_the_secrets_key_are_the_documented_ones() -> None:
    assert ANNOTATION_API_KEY_SECRET == "kaito.sh/api-key-secret"
    assert API_KEY_SECRET_KEY == "api-key"


@pytest.mark.parametrize("name", ["model-api-key", "a", "keys.team-a.example", "0key9"])
def test_a_secret_name_on_an_inference_preset_is_admitted(name: str, catalog: Catalog) -> None:
    ws = _with(inference_ws(), name)
    assert validate_object(ws, catalog) == []


@pytest.mark.parametrize("name", [
    "", "My-Key", "key_1", "-key", "key-", "key with space", "key/../x", "k" * 254, "ключ",
])
def test_anything_but_a_secret_name_is_a_clear_field_error(name: str, catalog: Catalog) -> None:
    errors = _errors(_with(inference_ws(), name), catalog)
    assert len(errors) == 1, errors
    _path, type_, message = errors[0]
    assert type_ == "Invalid"
    assert "is not a Secret name" in message
    assert API_KEY_SECRET_KEY in message  # says which key the Secret must hold
    if len(name) > 253:
        assert "253" in message
    else:
        assert "RFC 1123 subdomain" in message or "must name a Secret" in message


def test_a_tuning_workspace_has_no_model_api_to_protect(catalog: Catalog) -> None:
    errors = _errors(_with(tuning_ws(), "model-api-key"), catalog)
    assert [(t, "tuning Workspace has no model API" in m) for _p, t, m in errors] == [
        ("Forbidden", True)]


def test_a_workspace_with_its_own_pod_template_is_refused_the_annotation(
    catalog: Catalog,
) -> None:
    ws = inference_ws()
    ws["inference"] = {"template": {"spec": {"containers": [
        {"name": "server", "image": "registry.example.com/server:1"}]}}}
    errors = _errors(_with(ws, "model-api-key"), catalog)
    assert [(t, "inference.template" in m) for _p, t, m in errors] == [("Forbidden", True)]


def test_the_rule_runs_with_the_other_annotation_rules_on_the_typed_workspace() -> None:
    ws = parse_workspace(_with(inference_ws(), "Bad_Name"))
    errors = check_annotations(ws)
    assert [(e.path, e.type, e.value) for e in errors] == [(PATH, "Invalid", "Bad_Name")]
    assert check_annotations(parse_workspace(inference_ws())) == []


def test_an_update_that_sets_a_bad_name_is_refused(catalog: Catalog) -> None:
    old = inference_ws()
    new = _with(inference_ws(), "UPPER")
    assert any(e.path == PATH for e in validate_object(new, catalog, old))
