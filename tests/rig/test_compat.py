"""The rig adapts batch/v1 CronJobs to its 1.20 server; the product's manifests stay batch/v1."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiClient

from rig.compat import cronjob_for_server, server_minor
from rig.kapi import Kube, KubeApiError

CRONJOB: dict[str, Any] = {
    "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "reconcile"},
    "spec": {"schedule": "*/1 * * * *", "concurrencyPolicy": "Forbid", "timeZone": "Etc/UTC",
             "jobTemplate": {"spec": {"template": {"spec": {
                 "restartPolicy": "Never",
                 "containers": [{"name": "r", "image": "kaito-py:dev",
                                 "command": ["kaito", "reconcile"]}]}}}}},
}


def test_a_batch_v1_cronjob_becomes_v1beta1_below_1_21_without_touching_the_input() -> None:
    out = cronjob_for_server(CRONJOB, 20)
    assert out["apiVersion"] == "batch/v1beta1"
    assert "timeZone" not in out["spec"]
    assert out["spec"]["jobTemplate"] == CRONJOB["spec"]["jobTemplate"]
    assert CRONJOB["apiVersion"] == "batch/v1"
    assert "timeZone" in CRONJOB["spec"]


@pytest.mark.parametrize(("obj", "minor"), [
    pytest.param(CRONJOB, 21, id="new-server-keeps-batch-v1"),
    pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, 20,
                 id="other-kinds-untouched"),
])
def test_nothing_else_is_converted(obj: dict[str, Any], minor: int) -> None:
    assert cronjob_for_server(obj, minor) == obj


@pytest.mark.cluster
def test_the_converted_cronjob_is_accepted_by_the_rig_server(
        api_client: ApiClient, kube: Kube, namespace: str) -> None:
    minor = server_minor(api_client)
    assert minor == 20  # the documented rig version; update README and compat if it moves
    body = cronjob_for_server(CRONJOB, minor)
    created = kube.create(f"/apis/batch/v1beta1/namespaces/{namespace}/cronjobs", body)
    assert created["apiVersion"] == "batch/v1beta1"
    assert created["spec"]["concurrencyPolicy"] == "Forbid"
    with pytest.raises(KubeApiError) as info:
        kube.create(f"/apis/batch/v1/namespaces/{namespace}/cronjobs", CRONJOB)
    assert info.value.status == 404  # batch/v1 CronJob does not exist on 1.20
