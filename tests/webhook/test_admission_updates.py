"""Updates the webhook must never block: deletion and metadata it does not own.

Why: the reconciler removes its finalizer with an UPDATE of the Workspace. A Workspace that
a later catalog no longer accepts (its preset dropped, a count over the cap) used to be
refused on that UPDATE, so its deletion hung for good; the same for labels ArgoCD sets.
Each test fails on the webhook before issue L.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from presets.catalog import Catalog
from rig.reviews import phi3, review
from webhook.admission import mutate, parse_review, validate


def _invalid() -> dict[str, Any]:
    """A stored Workspace the current catalog refuses (its preset is gone)."""
    obj = phi3()
    obj["metadata"] = {**obj.get("metadata", {}), "name": "old", "uid": "u-1",
                       "resourceVersion": "7", "generation": 1,
                       "finalizers": ["workspace.kaito.sh/cleanup", "workspace.finalizer.kaito.sh"]}
    obj["inference"]["preset"]["name"] = "a-preset-the-catalog-dropped"
    return obj


def _verdict(catalog: Catalog, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    r = parse_review(review(new, operation="UPDATE", old=old))
    out: dict[str, Any] = validate(r, catalog).body["response"]
    return out


def _changed(edit: str) -> tuple[dict[str, Any], dict[str, Any]]:
    old = _invalid()
    new = copy.deepcopy(old)
    md = new["metadata"]
    if edit == "finalizers-removed":
        md["finalizers"] = []
    elif edit == "label-added":
        md["labels"] = {"argocd.argoproj.io/instance": "demo"}
    elif edit == "foreign-annotation":
        md["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
    elif edit == "status":
        new["status"] = {"conditions": []}
    elif edit == "deleting-and-finalizer-removed":
        old["metadata"]["deletionTimestamp"] = md["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        md["finalizers"] = ["workspace.finalizer.kaito.sh"]
    return new, old


@pytest.mark.parametrize("edit", ["finalizers-removed", "label-added", "foreign-annotation",
                                  "status", "deleting-and-finalizer-removed"])
def test_an_update_of_metadata_we_do_not_own_is_allowed_even_for_an_invalid_workspace(
    catalog: Catalog, edit: str,
) -> None:
    new, old = _changed(edit)
    assert _verdict(catalog, new, old)["allowed"] is True
    response = mutate(parse_review(review(new, operation="UPDATE", old=old)), catalog).body
    assert "patch" not in response["response"]


def test_any_update_of_a_workspace_being_deleted_is_allowed(catalog: Catalog) -> None:
    old = _invalid()
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    new = copy.deepcopy(old)
    new["resource"]["count"] = 99
    assert _verdict(catalog, new, old)["allowed"] is True


def test_a_spec_change_of_an_invalid_workspace_is_still_refused(catalog: Catalog) -> None:
    old = _invalid()
    new = copy.deepcopy(old)
    new["resource"]["count"] = 2
    verdict = _verdict(catalog, new, old)
    assert verdict["allowed"] is False
    assert verdict["status"]["code"] == 422


@pytest.mark.parametrize("key", ["kaito.sh/runtime", "kaito.sh/max-model-len",
                                 "kaito.sh/bypass-resource-checks"])
def test_a_change_to_a_kaito_annotation_is_still_judged(catalog: Catalog, key: str) -> None:
    old = phi3()
    new = copy.deepcopy(old)
    new.setdefault("metadata", {}).setdefault("annotations", {})[key] = "not-valid-here"
    new["resource"]["count"] = 99 if key.endswith("checks") else new["resource"].get("count", 1)
    assert _verdict(catalog, new, old)["allowed"] is False
