"""The running webhook registered with a REAL kube-apiserver by URL + caBundle: kubectl apply
of the seed examples comes back expanded, invalid and immutable changes are refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from presets.catalog import Catalog
from presets.expand import expand_object
from rig.seeds import PHI3_INFERENCE as PHI3
from rig.seeds import SEEDS
from tests.support.cluster import Kubectl
from tests.support.webhook import Server, admitting

pytestmark = pytest.mark.cluster


@pytest.fixture
def admitted(api_client: client.ApiClient, server: Server, namespace: str) -> Iterator[str]:
    """Our webhooks registered by URL for this test's namespace only; removed afterwards."""
    with admitting(api_client, server, namespace, tag="webhook-test") as admitted_ns:
        yield admitted_ns


def stored(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    out = kubectl("get", "workspace", name, "-n", namespace, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_kubectl_apply_of_a_seed_example_comes_back_expanded(
    seed: str, admitted: str, kubectl: Kubectl, catalog: Catalog
) -> None:
    text = SEEDS[seed]
    kubectl("apply", "-n", admitted, "-f", "-", input=text)
    obj = yaml.safe_load(text)
    live = stored(kubectl, admitted, obj["metadata"]["name"])
    expanded = expand_object(obj, catalog)
    for section in ("resource", "inference", "tuning"):
        assert live.get(section) == expanded.get(section), section
    assert live["resource"]["count"] >= 1
    annotations = live["metadata"]["annotations"]
    for key, value in expanded["metadata"]["annotations"].items():
        assert annotations[key] == value


def test_an_invalid_workspace_is_refused_with_its_field_errors(
    admitted: str, kubectl: Kubectl
) -> None:
    bad = PHI3.replace("Standard_NC6s_v3", "Standard_Nope_v9").replace(
        "phi-3-mini-4k-instruct", "phi-3-mini-4k-instructt"
    )
    proc = kubectl("apply", "-n", admitted, "-f", "-", input=bad, check=False)
    assert proc.returncode != 0
    # Our status carries reason Invalid and the causes, so kubectl lists one line per field.
    assert 'The Workspace "workspace-phi-3-mini" is invalid' in proc.stderr
    assert "* resource.instanceType: " in proc.stderr
    assert "* inference.preset.name: " in proc.stderr


def test_an_immutable_field_update_is_refused(admitted: str, kubectl: Kubectl) -> None:
    kubectl("apply", "-n", admitted, "-f", "-", input=PHI3)
    changed = PHI3.replace("Standard_NC6s_v3", "Standard_NC24ads_A100_v4")
    proc = kubectl("apply", "-n", admitted, "-f", "-", input=changed, check=False)
    assert proc.returncode != 0
    assert "resource.instanceType" in proc.stderr


def test_applying_the_same_terse_file_twice_reports_unchanged(
    admitted: str, kubectl: Kubectl
) -> None:
    first = kubectl("apply", "-n", admitted, "-f", "-", input=PHI3).stdout
    assert "workspace-phi-3-mini created" in first
    second = kubectl("apply", "-n", admitted, "-f", "-", input=PHI3).stdout
    assert "workspace-phi-3-mini unchanged" in second
    dry = kubectl(
        "apply",
        "-n",
        admitted,
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        input=PHI3,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
