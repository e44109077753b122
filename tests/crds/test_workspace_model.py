"""The Python model and the CRD YAML describe the same Workspace; round-trips keep all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from crds import workspace as wsmod
from crds.codec import Field
from crds.workspace import FieldError, Workspace, WorkspaceParseError, parse_workspace, to_dict

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "kaito.sh_workspaces.yaml").read_text())
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _schema(version: str) -> dict[str, Any]:
    found = [v for v in CRD["spec"]["versions"] if v["name"] == version]
    assert len(found) == 1, f"version {version} missing"
    schema: dict[str, Any] = found[0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(model: type[Any], schema: dict[str, Any], path: str) -> list[str]:
    """Differences between a dataclass's JSON fields and a schema object's properties."""
    fields: tuple[Field, ...] = model.JSON_FIELDS
    props = schema.get("properties", {})
    diffs = [
        f"{path}.{k}: in the CRD, not in {model.__name__}"
        for k in props
        if k not in {f.json for f in fields}
    ]
    for f in fields:
        if f.json not in props:
            diffs.append(f"{path}.{f.json}: in {model.__name__}, not in the CRD")
            continue
        prop = props[f.json]
        if f.kind == "model":
            assert f.model is not None
            diffs += _walk(f.model, prop, f"{path}.{f.json}")
        elif f.kind == "modellist":
            assert f.model is not None
            assert prop["type"] == "array"
            diffs += _walk(f.model, prop["items"], f"{path}.{f.json}[]")
    return diffs


def test_every_crd_property_is_a_model_field_and_back() -> None:
    schema = _schema("v1alpha1")
    props = dict(schema["properties"])
    assert props.pop("metadata") == {"type": "object"}
    trimmed = {**schema, "properties": {**props, "metadata": {"properties": {}}}}
    diffs = [d for d in _walk(Workspace, trimmed, "") if not d.startswith(".metadata.")]
    assert diffs == []


def test_both_versions_share_one_schema_and_v1alpha1_is_stored() -> None:
    versions = {v["name"]: v for v in CRD["spec"]["versions"]}
    assert set(versions) == {"v1alpha1", "v1beta1"}
    assert versions["v1alpha1"]["schema"] == versions["v1beta1"]["schema"]
    assert versions["v1alpha1"]["storage"] is True
    assert versions["v1beta1"]["storage"] is False
    assert all(v["served"] and v["subresources"] == {"status": {}} for v in versions.values())


def test_names_scope_and_printer_columns_match_the_seed() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "workspaces.kaito.sh"
    assert spec["group"] == wsmod.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["wk", "wks"]
    assert spec["names"]["categories"] == ["kaito"]
    for version in spec["versions"]:
        columns = version["additionalPrinterColumns"]
        default = [c["name"].upper() for c in columns if not c.get("priority")]
        wide = [c["name"].upper() for c in columns if c.get("priority") == 1]
        assert default == ["INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
        assert wide == ["JOBSTARTED", "WORKSPACESUCCEEDED", "CONTEXT", "PARALLELISM"]
        ready = next(c for c in columns if c["name"] == "WorkspaceReady")
        assert ready["jsonPath"] == '.status.conditions[?(@.type=="WorkspaceReady")].status'


def test_the_schema_uses_no_features_kubernetes_1_20_lacks() -> None:
    text = (REPO / "crds" / "kaito.sh_workspaces.yaml").read_text()
    assert "x-kubernetes-validations" not in text
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"


def test_free_form_fields_preserve_unknown_fields() -> None:
    props = _schema("v1beta1")["properties"]
    assert (
        props["inference"]["properties"]["template"]["x-kubernetes-preserve-unknown-fields"] is True
    )
    for side in ("input", "output"):
        volume = props["tuning"]["properties"][side]["properties"]["volumeSource"]
        assert volume["x-kubernetes-preserve-unknown-fields"] is True


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_round_trip_unchanged(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        ws = parse_workspace(doc)
        assert to_dict(ws) == doc
        assert parse_workspace(to_dict(ws)) == ws


def test_unknown_fields_are_kept_at_every_level() -> None:
    doc = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "a", "uid": "123", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "resource": {"instanceType": "x", "futureField": {"a": 1}},
        "inference": {
            "preset": {"name": "p", "presetOptions": {"newOption": True}},
            "extra": [1, 2],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True", "severity": "Info"}]},
        "spec": {"ignored": "kept"},
    }
    assert to_dict(parse_workspace(doc)) == doc


def test_wrong_types_are_all_reported_with_paths() -> None:
    doc = {
        "metadata": {"name": 5, "labels": {"a": 1}},
        "resource": {"count": "2", "preferredNodes": ["ok", 3]},
        "inference": {"adapters": [{"strength": 1.0}, "x"]},
    }
    with pytest.raises(WorkspaceParseError) as info:
        parse_workspace(doc)
    pairs = [(e.path, e.type) for e in info.value.errors]
    assert pairs == [
        ("metadata.name", "Invalid"),
        ("metadata.labels.a", "Invalid"),
        ("resource.count", "Invalid"),
        ("resource.preferredNodes[1]", "Invalid"),
        ("inference.adapters[0].strength", "Invalid"),
        ("inference.adapters[1]", "Invalid"),
    ]


def test_booleans_are_not_integers() -> None:
    with pytest.raises(WorkspaceParseError) as info:
        parse_workspace({"resource": {"count": True}})
    assert [(e.path, e.type) for e in info.value.errors] == [("resource.count", "Invalid")]


def test_field_error_prints_path_and_message() -> None:
    error = FieldError(
        path="inference.adapters[2].strength", type="Invalid", message="must be in [0, 1]"
    )
    assert str(error) == "inference.adapters[2].strength: must be in [0, 1]"
    assert error.type in wsmod.ERROR_TYPES


def test_shared_names_are_the_contract() -> None:
    assert wsmod.ANNOTATION_CATALOG_REVISION == "kaito.sh/catalog-revision"
    assert wsmod.ANNOTATION_BYPASS == "kaito.sh/bypass-resource-checks"
    assert wsmod.LABEL_WORKSPACE == "kaito.sh/workspace"
    assert wsmod.FINALIZER == "workspace.kaito.sh/cleanup"
