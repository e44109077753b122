"""Typed inside: a reconcile pass parses each Workspace once and hands the typed object on.

Every parse of a Workspace, strict or lenient and from whichever module, goes through
`crds.workspace.parse_model(Workspace, ...)`; the counter wraps that one call and keys it by
the object's name. Expansion, validation, resolution, the provisioner's NodeRequest and the
desired objects must all work from the one parse (issue O's acceptance).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from kubernetes import client

import crds.workspace
from crds.codec import parse_model
from reconciler.expansion import node_request, prepare
from reconciler.kube import Kube
from reconciler.objects import desired_objects
from tests.reconciler.helpers import catalog, create_ws, phi3, reconcile, tuning_ws, unique


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Workspace name -> how many times a Workspace with that name was parsed."""
    counts: Counter[str] = Counter()

    def counting(model: Any, obj: Any, path: str, errors: Any) -> Any:
        if model is crds.workspace.Workspace:
            md = obj.get("metadata") if isinstance(obj, dict) else None
            counts[str((md or {}).get("name"))] += 1
        return parse_model(model, obj, path, errors)

    monkeypatch.setattr(crds.workspace, "parse_model", counting)
    return counts


def _stored(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "namespace": "default", "uid": "u-1"}}


@pytest.mark.parametrize("make", [
    pytest.param(phi3, id="inference"),
    pytest.param(tuning_ws, id="tuning"),
])
def test_preparing_and_building_a_workspace_parses_it_once(
    parses: Counter[str], make: Any,
) -> None:
    obj = _stored(make("ws-once", "label"))
    prep = prepare(obj, catalog())
    request = node_request(prep.ws, prep.resolved)
    objects = desired_objects(prep.ws, prep.resolved, ("node-1",))
    assert (request.name, request.uid) == ("ws-once", "u-1")
    assert objects
    assert parses == Counter({"ws-once": 1})


def test_a_counter_that_sees_nothing_would_fail(parses: Counter[str]) -> None:
    crds.workspace.parse_workspace(_stored(phi3("ws-seen", "label")))
    crds.workspace.parse_workspace_lenient(_stored(phi3("ws-seen", "label")))
    assert parses == Counter({"ws-seen": 2})


@pytest.mark.cluster
def test_a_real_pass_parses_each_workspace_once(
    api_client: client.ApiClient, workspace_crd: object, namespace: str,
    parses: Counter[str],
) -> None:
    names = [unique("infer"), unique("tune")]
    create_ws(api_client, namespace, phi3(names[0], unique("l")))
    create_ws(api_client, namespace, tuning_ws(names[1], unique("l")))
    summary = reconcile(Kube(api_client), namespace)
    assert summary.workspaces == 2, summary.line()
    assert {name: parses[name] for name in names} == dict.fromkeys(names, 1)
