"""AKS agent-pool provisioner against the fake ARM endpoint: the real SDK over real HTTPS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from reconciler.provision.aks import AgentPoolProvisioner, pool_name
from reconciler.provision.base import Snapshot
from reconciler.provision.factory import ProvisionSettings, provisioner_for
from tests.reconciler.fake_arm import QUOTA_MESSAGE, SKU_MESSAGE, TOKEN, FakeArm, Reply
from tests.reconciler.provision_helpers import NOW, MemoryWriter, node, request

WS = ("default", "workspace-phi-3-mini")


class StaticToken:
    """A TokenCredential that hands out the fake ARM's token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(TOKEN, int(time.time()) + 3600)


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    fake = FakeArm(polls_to_finish=2)
    fake.start()
    yield fake
    fake.cleanup()


def make(arm: FakeArm, grace_seconds: int = 300) -> AgentPoolProvisioner:
    settings = ProvisionSettings(
        provisioner="aks",
        azure_subscription_id="0000-sub",
        azure_resource_group="rg-kaito",
        azure_cluster_name="aks-kaito",
        arm_endpoint=arm.base_url,
        gc_grace_seconds=grace_seconds,
    )
    prov = provisioner_for("aks", settings, credential=StaticToken(), connection_verify=arm.ca_file)
    assert isinstance(prov, AgentPoolProvisioner)
    return prov


def snap(seconds: int = 0, nodes: list[dict[str, Any]] | None = None) -> Snapshot:
    """A new pass: a fresh Snapshot (so the provisioner lists pools again)."""
    return Snapshot(nodes=nodes or [], now=NOW + timedelta(seconds=seconds))


def test_create_poll_ready_and_delete(arm: FakeArm) -> None:
    prov, writer, req = make(arm), MemoryWriter(), request()
    name = pool_name(req)
    first = prov.ensure(req, snap(), writer)
    assert (first.ready, first.reason) == (False, "AgentPoolCreating")
    props = arm.pools[name].body["properties"]
    assert props["vmSize"] == "Standard_NC6s_v3"
    assert props["count"] == 1
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert props["nodeLabels"] == {
        "apps": "phi-3",
        "kaito.sh/workspace": "workspace-phi-3-mini",
        "kaito.sh/workspacenamespace": "default",
    }
    assert props["tags"]["kaito-workspace"] == "workspace-phi-3-mini"
    assert writer.events[0][1] == "AgentPoolCreating"
    assert prov.ensure(req, snap(1), writer).reason == "AgentPoolCreating"
    waiting = prov.ensure(req, snap(2), writer)
    assert (waiting.ready, waiting.reason) == (False, "NodeNotReady")
    pool_node = node("aks-pool-0", labels={"kubernetes.azure.com/agentpool": name})
    ready = prov.ensure(req, snap(3, [pool_node]), writer)
    assert ready.ready
    assert list(ready.nodes) == ["aks-pool-0"]
    assert arm.count("PUT") == 1
    assert not prov.release(*WS, snap(4), writer)
    assert arm.count("DELETE") == 1
    assert not prov.release(*WS, snap(5), writer)
    assert prov.release(*WS, snap(6), writer)
    assert arm.count("DELETE") == 1
    assert arm.pools == {}


@pytest.mark.parametrize(
    ("reply", "reason", "fragment"),
    [
        pytest.param(
            Reply(409, "QuotaExceeded", QUOTA_MESSAGE.format(cluster="aks-kaito", rg="rg-kaito")),
            "QuotaExceeded",
            "exceeding approved standardNCSv3Family Cores quota",
            id="quota",
        ),
        pytest.param(
            Reply(400, "SkuNotAvailable", SKU_MESSAGE.format(sku="Standard_NC6s_v3")),
            "SkuNotAvailable",
            "is currently not available in location 'eastus'",
            id="sku-not-available",
        ),
    ],
)
def test_azure_rejections_reach_the_status_in_azures_words(
    arm: FakeArm, reply: Reply, reason: str, fragment: str
) -> None:
    arm.put_errors["Standard_NC6s_v3"] = reply
    status = make(arm).ensure(request(), snap(), MemoryWriter())
    assert (status.ready, status.reason) == (False, reason)
    assert fragment in status.message
    assert arm.pools == {}


def test_a_failed_provisioning_shows_the_pools_error(arm: FakeArm) -> None:
    arm.async_failures["Standard_NC6s_v3"] = ("AllocationFailed", "Allocation failed. No capacity.")
    prov = make(arm)
    prov.ensure(request(), snap(), MemoryWriter())
    prov.ensure(request(), snap(1), MemoryWriter())
    status = prov.ensure(request(), snap(2), MemoryWriter())
    assert (status.ready, status.reason) == (False, "AllocationFailed")
    assert "Allocation failed. No capacity." in status.message


def test_throttling_backs_off_for_retry_after_and_is_not_a_failure(arm: FakeArm) -> None:
    prov = make(arm)
    arm.throttle_next("GET", 7)
    status = prov.ensure(request(), snap(), MemoryWriter())
    assert status.reason == "Throttled"
    assert "retrying after 7 s" in status.message
    calls = len(arm.requests)
    again = prov.ensure(request(), snap(3), MemoryWriter())
    assert again.reason == "Throttled"
    assert "retrying after 4 s" in again.message
    assert not prov.release("default", "other", snap(3), MemoryWriter())
    assert len(arm.requests) == calls  # no ARM call while backing off
    after = prov.ensure(request(), snap(8), MemoryWriter())
    assert after.reason == "AgentPoolCreating"


@pytest.mark.parametrize("conflict", [False, True], ids=["aks-aborts-create", "aks-says-409"])
def test_deleting_mid_creation_leaves_no_pool(arm: FakeArm, conflict: bool) -> None:
    arm.conflict_delete_while_creating = conflict
    prov, writer = make(arm), MemoryWriter()
    prov.ensure(request(), snap(), writer)
    done = [prov.release(*WS, snap(i + 1), writer) for i in range(6)]
    assert done[-1]
    assert arm.pools == {}
    assert done.index(True) <= 5


def test_a_404_on_delete_counts_as_done(arm: FakeArm) -> None:
    prov = make(arm)
    prov.ensure(request(), snap(), MemoryWriter())
    arm.reply_once("DELETE", Reply(404, "NotFound", "Agent pool not found."))
    assert prov.release(*WS, snap(1), MemoryWriter())


def test_scale_up_but_never_down(arm: FakeArm) -> None:
    prov = make(arm)
    prov.ensure(request(), snap(), MemoryWriter())
    prov.ensure(request(), snap(1), MemoryWriter())
    status = prov.ensure(request(count=2), snap(2), MemoryWriter())
    assert status.reason == "AgentPoolScaling"
    assert arm.pools[pool_name(request())].body["properties"]["count"] == 2
    prov.ensure(request(count=1), snap(3), MemoryWriter())
    prov.ensure(request(count=1), snap(4), MemoryWriter())
    assert arm.pools[pool_name(request())].body["properties"]["count"] == 2
    assert arm.count("PUT") == 2


def test_sweep_deletes_old_orphan_pools_only(arm: FakeArm) -> None:
    prov = make(arm, grace_seconds=300)
    prov.ensure(request(name="gone"), snap(-3600), MemoryWriter())
    prov.ensure(request(name="just-gone"), snap(-60), MemoryWriter())
    prov.ensure(request(), snap(-3600), MemoryWriter())
    arm.pools["nodepool1"] = type(arm.pools[pool_name(request())])(
        body={"name": "nodepool1", "properties": {"vmSize": "Standard_D4s_v5", "count": 3}},
        state="Succeeded",
        reads_left=0,
    )
    writer = MemoryWriter()
    deleted = prov.sweep({WS}, snap(), writer)
    assert deleted == [pool_name(request(name="gone"))]
    assert "default/gone no longer exists" in writer.events[0][2]
    assert [m for m, _ in arm.requests].count("DELETE") == 1


def test_an_unreachable_arm_is_reported_not_raised(arm: FakeArm) -> None:
    prov = make(arm)
    arm.stop()
    status = prov.ensure(request(), snap(), MemoryWriter())
    assert (status.ready, status.reason) == (False, "AzureUnreachable")
