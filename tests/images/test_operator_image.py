"""The operator image as a container: the webhook over TLS, the reconciler's CLI, uid 65532.

Runs as the manifests run it (read-only root filesystem, all capabilities dropped, the
image's own user), with the host network on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from rig.images.dockerd import Engine
from rig.procs import free_port
from tests.images.conftest import Container, one_shot

# Setup builds the image when its inputs changed: minutes, not the default 15.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

RESTRICTED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def test_kaito_reconcile_help_runs_as_uid_65532(engine: Engine,
                                                image: Callable[[str], str]) -> None:
    tag = image("operator")
    with one_shot(engine, tag, "sh", "-c", "id -u && kaito reconcile --help",
                  run_args=RESTRICTED) as proc:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    uid, _, usage = proc.stdout.partition("\n")
    assert uid == "65532"
    assert usage.startswith("usage: kaito reconcile")


def test_the_operator_image_carries_no_torch_and_no_data_plane(
        engine: Engine, image: Callable[[str], str]) -> None:
    probe = ("import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None "
             "for m in ['torch', 'transformers', 'runtime', 'webhook', 'reconciler', 'kaito']}))")
    with one_shot(engine, image("operator"), "python", "-c", probe, run_args=RESTRICTED) as proc:
        assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"torch": False, "transformers": False, "runtime": False,
                                       "webhook": True, "reconciler": True, "kaito": True}


def test_the_webhook_serves_tls_and_admits_a_workspace(
        image: Callable[[str], str], container: Callable[..., Container],
        tmp_path: Path) -> None:
    certs = tmp_path / "tls"
    certs.mkdir(mode=0o777)
    certs.chmod(0o777)  # the container's uid 65532 makes its certificate here
    port = free_port()
    box = container(image("operator"), "kaito", "webhook", "serve",
                    f"--bind=127.0.0.1:{port}", "--cert-dir=/tls", "--ip=127.0.0.1",
                    "--workers=1", run_args=(*RESTRICTED, "--volume", f"{certs}:/tls"))
    url = f"https://127.0.0.1:{port}"
    ca = str(certs / "ca.crt")  # written by the server when it makes its certificate
    box.wait_http(url + "/healthz", 120, verify=ca)
    assert requests.get(url + "/readyz", timeout=10, verify=ca).status_code == 200
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "u-1", "operation": "CREATE",
                          "kind": {"group": "kaito.sh", "version": "v1beta1",
                                   "kind": "Workspace"},
                          "object": {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                                     "metadata": {"name": "w", "namespace": "default"},
                                     "resource": {"instanceType": "Standard_NC24ads_A100_v4",
                                                  "labelSelector": {
                                                      "matchLabels": {"apps": "phi-3"}}},
                                     "inference": {"preset": {
                                         "name": "phi-3-mini-4k-instruct"}}}}}
    answer = requests.post(url + "/validate", json=review, timeout=30, verify=ca)
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"]["uid"] == "u-1"
    assert answer.json()["response"]["allowed"] is True, answer.text
