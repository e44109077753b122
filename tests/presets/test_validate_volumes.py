"""The volume rule: a Workspace hands our pods only namespace-local volume types.

Each case fails on a tree without presets/validate/volumes.py: hostPath and the other
node-level types used to pass straight into the tuning Job and the adapter init containers.
"""

from __future__ import annotations

from typing import Any

import pytest

from presets.catalog import Catalog
from presets.validate import validate_object
from presets.validate.volumes import ALLOWED_VOLUME_TYPES, check_volume_source
from reconciler.expansion import SpecError, prepare
from tests.presets.factories import Doc, inference_ws, tuning_ws

NODE_LEVEL = ("hostPath", "nfs", "iscsi", "rbd", "cephfs", "csi", "flexVolume", "glusterfs",
              "gcePersistentDisk", "awsElasticBlockStore", "azureDisk", "azureFile", "local",
              "fc", "flocker", "portworxVolume", "quobyte", "scaleIO", "storageos",
              "vsphereVolume", "photonPersistentDisk", "cinder", "gitRepo", "downwardAPI",
              "projected")
PATH = "tuning.input.volumeSource"


def _pairs(errors: list[Any]) -> list[tuple[str, str]]:
    return [(e.path, e.type) for e in errors]


@pytest.mark.parametrize("kind", NODE_LEVEL)
def test_node_level_and_unlisted_volume_types_are_forbidden_with_their_path(kind: str) -> None:
    assert _pairs(check_volume_source({kind: {"path": "/"}}, PATH)) == [
        (f"{PATH}.{kind}", "Forbidden")]


@pytest.mark.parametrize("kind", ALLOWED_VOLUME_TYPES)
def test_namespace_local_volume_types_are_accepted(kind: str) -> None:
    assert check_volume_source({kind: {}}, PATH) == []


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param({}, [(PATH, "Required")], id="no-type"),
    pytest.param({"emptyDir": {}, "secret": {"secretName": "s"}}, [(PATH, "Invalid")],
                 id="two-types"),
    pytest.param({"name": "x", "emptyDir": {}}, [(f"{PATH}.name", "Forbidden")], id="name"),
    pytest.param("hostPath", [(PATH, "Invalid")], id="not-an-object"),
    pytest.param({"secret": "s"}, [(f"{PATH}.secret", "Invalid")], id="type-not-an-object"),
    pytest.param({"hostPath": {"path": "/"}, "emptyDir": {}}, [(f"{PATH}.hostPath", "Forbidden")],
                 id="hidden-next-to-an-allowed-one"),
])
def test_malformed_volume_sources_are_refused(value: Any, expected: list[tuple[str, str]]) -> None:
    assert _pairs(check_volume_source(value, PATH)) == expected


def _tuning_with(section: str, source: Any) -> Doc:
    ws = tuning_ws()
    if section == "input":
        ws["tuning"]["input"] = {"volumeSource": source}
    else:
        ws["tuning"]["output"] = {"volumeSource": source}
    return ws


@pytest.mark.parametrize("section", ["input", "output"])
def test_validate_object_refuses_a_host_path_for_tuning_data(
    catalog: Catalog, section: str,
) -> None:
    ws = _tuning_with(section, {"hostPath": {"path": "/var/lib/kubelet"}})
    assert (f"tuning.{section}.volumeSource.hostPath", "Forbidden") in _pairs(
        validate_object(ws, catalog))


def test_validate_object_refuses_a_host_path_adapter(catalog: Catalog) -> None:
    ws = inference_ws(preset="phi-3-mini-4k-instruct")
    ws["inference"]["adapters"] = [
        {"source": {"name": "a1", "volumeSource": {"hostPath": {"path": "/etc"}}}}]
    assert ("inference.adapters[0].source.volumeSource.hostPath", "Forbidden") in _pairs(
        validate_object(ws, catalog))


def test_validate_object_accepts_a_pvc_for_tuning_and_adapters(catalog: Catalog) -> None:
    ws = _tuning_with("output", {"persistentVolumeClaim": {"claimName": "out"}})
    assert validate_object(ws, catalog) == []
    inf = inference_ws()
    inf["inference"]["adapters"] = [
        {"source": {"name": "a1", "volumeSource": {"persistentVolumeClaim": {"claimName": "a"}}}}]
    assert validate_object(inf, catalog) == []


def test_the_reconciler_refuses_a_host_path_that_bypassed_the_webhook(catalog: Catalog) -> None:
    ws = _tuning_with("input", {"hostPath": {"path": "/"}})
    ws["metadata"]["uid"] = "u-1"
    with pytest.raises(SpecError, match=r"tuning\.input\.volumeSource\.hostPath"):
        prepare(ws, catalog)
