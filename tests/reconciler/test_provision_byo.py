"""Bring-your-own node selection and the provisioner factory: who is chosen, who is not and why."""

from __future__ import annotations

import pytest

from crds.workspace import provisioner_of
from reconciler.provision.base import Snapshot
from reconciler.provision.byo import ByoProvisioner, gpu_capacity, select_byo_nodes
from reconciler.provision.factory import (
    ProvisionSettings,
    SettingsError,
    provisioner_for,
)
from tests.reconciler.provision_helpers import NOW, MemoryWriter, node, request

PHI = {"apps": "phi-3"}


def test_two_labelled_gpu_nodes_are_both_chosen_and_nothing_is_created() -> None:
    nodes = [node("gpu-a", labels=PHI), node("gpu-b", labels=PHI), node("cpu-1")]
    writer = MemoryWriter()
    status = ByoProvisioner().ensure(request(), Snapshot(nodes=nodes, now=NOW), writer)
    assert status.ready
    assert list(status.nodes) == ["gpu-a", "gpu-b"]
    assert "using nodes gpu-a, gpu-b" in status.message
    assert writer.creates == writer.deletes == []


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        pytest.param(node("n", labels=PHI, ready=False), "not Ready", id="not-ready"),
        pytest.param(node("n", labels=PHI, gpus=0), "no nvidia.com/gpu capacity", id="no-gpu"),
        pytest.param(node("n", labels=PHI, unschedulable=True), "cordoned", id="cordoned"),
        pytest.param(
            node("n", labels={**PHI, "nvidia.com/gpu.memory": "4096"}),
            "too little GPU memory: 4 GiB",
            id="too-little-gpu-memory",
        ),
        pytest.param(
            node("n", labels={**PHI, "node.kubernetes.io/instance-type": "Standard_D8s_v3"}),
            "wrong instance type Standard_D8s_v3",
            id="wrong-instance-type",
        ),
    ],
)
def test_unusable_nodes_are_named_with_the_reason(bad: dict[str, object], why: str) -> None:
    good = node("good", labels={**PHI, "nvidia.com/gpu.memory": "16384"})
    sel = select_byo_nodes(request(), [bad, good])
    assert sel.chosen == ("good",)
    assert why in sel.rejected["n"]
    assert f"n ({sel.rejected['n']})" in sel.message


def test_preferred_nodes_come_first_and_missing_ones_are_reported() -> None:
    req = request(preferred_nodes=("zeta", "ghost"), label_selector={"apps": "nothing"})
    sel = select_byo_nodes(req, [node("alpha", labels=PHI), node("zeta")])
    assert sel.chosen == ("zeta",)
    assert sel.rejected == {"ghost": "preferred node does not exist"}


def test_not_enough_nodes_is_not_ready_with_the_selector_in_the_message() -> None:
    status = ByoProvisioner().ensure(
        request(count=2), Snapshot(nodes=[node("a", labels=PHI)], now=NOW), MemoryWriter()
    )
    assert (status.ready, status.reason) == (False, "NotEnoughNodes")
    assert "1 of 2 nodes usable" in status.message
    assert "apps=phi-3" in status.message


def test_an_empty_selector_matches_nothing() -> None:
    assert select_byo_nodes(request(label_selector={}), [node("a")]).chosen == ()


def test_settings_report_every_bad_variable_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        ProvisionSettings.from_env({"KAITO_PROVISIONER": "aks", "KAITO_GC_GRACE_SECONDS": "soon"})
    text = str(err.value)
    for fragment in ("KAITO_GC_GRACE_SECONDS", "AZURE_SUBSCRIPTION_ID", "AZURE_CLUSTER_NAME"):
        assert fragment in text
    with pytest.raises(SettingsError, match="one of karpenter, aks, byo"):
        ProvisionSettings.from_env({"KAITO_PROVISIONER": "gke"})


def test_factory_builds_each_provisioner_by_name() -> None:
    settings = ProvisionSettings.from_env({"KAITO_GC_GRACE_SECONDS": "60"})
    assert provisioner_for("karpenter", settings).name == "karpenter"
    assert provisioner_for("byo", settings).name == "byo"
    with pytest.raises(SettingsError, match="AZURE_RESOURCE_GROUP"):
        provisioner_for("aks", settings)
    with pytest.raises(SettingsError, match="unknown provisioner"):
        provisioner_for("gke", settings)


def test_the_workspace_annotation_overrides_the_install_default() -> None:
    assert provisioner_of({"kaito.sh/provisioner": "BYO"}, "karpenter") == "byo"
    assert provisioner_of({}, "karpenter") == "karpenter"
    with pytest.raises(ValueError, match=r"kaito\.sh/provisioner='gke'"):
        provisioner_of({"kaito.sh/provisioner": "gke"}, "karpenter")


@pytest.mark.parametrize(
    ("capacity", "gpus"),
    [
        pytest.param("1k", 1000, id="suffixed-quantity"),
        pytest.param("8", 8, id="plain"),
        pytest.param("not-a-number", 0, id="garbage-is-no-gpu"),
    ],
)
def test_gpu_capacity_reads_kubernetes_quantities(capacity: str, gpus: int) -> None:
    assert gpu_capacity({"status": {"capacity": {"nvidia.com/gpu": capacity}}}) == gpus
