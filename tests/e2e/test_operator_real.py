"""The operator installed from manifests/ runs as real pods and serves SmolLM2 from its image.

Why: every claim about what the operator's pods do (the bootstrap Job writes the TLS
Secret and caBundles, the webhook's gunicorn serves TLS behind its Service and the
apiserver calls it there, the reconciler CronJob's pod reaches the apiserver through the
`kubernetes` Service, the model pod runs the cpu-runtime image's command on a real node)
needs a real kubelet running the real images. This module builds (or reuses) the images
with rig.images, pushes them to a loopback registry, starts its OWN control plane (the
operator judges and reconciles every Workspace of a cluster, so it must not be installed
in the shared test cluster) with one real system node, applies the karpenter overlay
(image name pointing at the registry; rig.operator), and lets the rig's Karpenter answer
the reconciler's NodeClaims with real nodes. When a part cannot start, the test FAILS with
the reason; it never skips. Only one state dir on a machine may run real nodes at a time.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from rig import operator
from rig.images import build
from tests.e2e.conftest import Installed

# A cold first run builds the images (minutes) inside the first test's setup.
pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(2400)]
REPO = Path(__file__).resolve().parents[2]
SMOLLM = REPO / "examples" / "smollm2-135m-instruct.yaml"
TOO_SMALL = REPO / "examples" / "llama-3.3-70b-too-small.yaml"
NS = "default"
# The `installed` fixture (tests/e2e/conftest.py) with its defaults: the operator and the
# cpu-runtime image.


def test_the_operator_runs_as_pods_from_the_local_registry(installed: Installed) -> None:
    images = operator.images_of(installed.docs)
    assert images == {f"{installed.registry_host}/kaito-py/kaito:{build.version()}"}
    job = installed.get("job", "-n", operator.NAMESPACE, "kaito-webhook-bootstrap")
    assert job["status"]["succeeded"] >= 1
    pods = installed.get("pods", "-n", operator.NAMESPACE,
                         "-l", "app.kubernetes.io/name=kaito-webhook")["items"]
    assert len(pods) == 2
    for pod in pods:
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] is True
        assert status["imageID"].startswith(
            f"docker-pullable://{installed.registry_host}/kaito-py/kaito@sha256:")
        assert pod["spec"]["nodeName"] == "system-1"
    # the reconciler CronJob's pod reaches the apiserver through the `kubernetes` Service
    log = installed.reconcile()
    assert "pass: workspaces=" in log, log


def test_the_webhook_pods_mutate_and_validate_workspaces(installed: Installed) -> None:
    applied = installed.kubectl("apply", "-n", NS, "-f", str(SMOLLM))
    assert "created" in applied.stdout or "unchanged" in applied.stdout
    ws = installed.get("workspace", "-n", NS, "workspace-smollm2")
    original = next(d for d in yaml.safe_load_all(SMOLLM.read_text()) if d)
    assert "count" not in original["resource"]
    assert ws["resource"]["count"] == 1, ws["resource"]  # filled in by /mutate
    refused = installed.kubectl("apply", "-n", NS, "-f", str(TOO_SMALL), check=False)
    assert refused.returncode != 0
    # the GPU-fit verdict: only /validate computes it (the CRD schema cannot)
    assert 'Workspace "workspace-llama-3-3-70b-too-small" is invalid' in refused.stderr
    assert "does not fit" in refused.stderr, refused.stderr


def _chat(url: str, body: bytes) -> str:
    req = urllib.request.Request(  # noqa: S310 (a ClusterIP the rig routes)
        url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 (a ClusterIP the rig routes)
        return str(resp.read().decode())


def test_smollm2_is_served_by_the_cpu_runtime_image_in_a_real_pod(
        installed: Installed) -> None:
    installed.kubectl("apply", "-n", NS, "-f", str(SMOLLM))
    deadline = time.monotonic() + 900
    conds: dict[str, Any] = {}
    while time.monotonic() < deadline:
        installed.reconcile()
        ws = installed.get("workspace", "-n", NS, "workspace-smollm2")
        conds = {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}
        if conds.get("WorkspaceReady", {}).get("status") == "True":
            break
        time.sleep(2)
    else:
        pytest.fail(f"WorkspaceReady not True after 900 s: {conds}\n"
                    f"{operator.pods_state(installed.kubectl, NS)}", pytrace=False)
    pod = installed.get("pods", "-n", NS, "-l", "kaito.sh/workspace=workspace-smollm2")["items"][0]
    container = pod["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/kaito-py/cpu-runtime:{build.version()}"
    assert container["command"][:3] == ["python", "-m", "runtime.serving.server"]
    assert pod["spec"]["nodeName"].startswith("aks-")  # a node the Karpenter started for it
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    node = installed.get("node", pod["spec"]["nodeName"])
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("docker://")
    body = json.dumps({"prompt": "What is the capital of France?",
                       "generate_kwargs": {"max_new_tokens": 24}})
    path = f"/api/v1/namespaces/{NS}/services/workspace-smollm2:80/proxy/chat"
    via_proxy = installed.kubectl("create", "--raw", path, "-f", "-", input=body,
                                  timeout=300).stdout
    assert "paris" in via_proxy.lower(), via_proxy
    svc = installed.get("service", "-n", NS, "workspace-smollm2")
    via_cluster_ip = _chat(f"http://{svc['spec']['clusterIP']}:80/chat", body.encode())
    assert "paris" in via_cluster_ip.lower(), via_cluster_ip
