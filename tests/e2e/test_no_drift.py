"""No drift for GitOps: every example, once applied through our webhook, diffs clean.

Why: ArgoCD marks an app OutOfSync when the live object differs from Git. Our mutating
webhook adds fields, so this checks, on the real control plane with the real webhook
(`kaito webhook serve` over TLS, registered by URL for this test's namespace only), both
comparisons ArgoCD can make: `kubectl diff` (a server-side dry-run apply, what ArgoCD's
server-side diff does) and a reproduction of the legacy three-way comparison (desired from
Git, live, and the last-applied annotation). It must not register a webhook for other
namespaces, or leave one registered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.support.cluster import Kubectl
from tests.support.webhook import Server, admitting, start_server, stop_server

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SERVER_OWNED_META = {
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "namespace",
}

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def webhook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("nodrift-webhook")
    server = start_server(base / "certs", base / "webhook.log")
    yield server
    stop_server(server)


@pytest.fixture
def admitted(api_client: client.ApiClient, webhook_server: Server, namespace: str) -> Iterator[str]:
    with admitting(api_client, webhook_server, namespace, tag="nodrift") as admitted_ns:
        yield admitted_ns


def workspaces_in(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Workspace"]


def legacy_three_way_drift(desired: Any, live: Any, last: Any, path: str = "") -> list[str]:
    """ArgoCD's legacy comparison: a field differs when Git sets it and live disagrees, or when
    live still has a field that Git dropped but the last apply had. Fields that neither Git nor
    the last apply mention are the server's (defaults, our webhook's additions) and ignored."""
    if isinstance(desired, dict) and isinstance(live, dict):
        out = []
        last_d = last if isinstance(last, dict) else {}
        for key in sorted(set(desired) | set(last_d)):
            sub = f"{path}.{key}"
            if key in desired:
                if key not in live:
                    out.append(f"{sub}: in Git, missing live")
                else:
                    out += legacy_three_way_drift(desired[key], live[key], last_d.get(key), sub)
            elif key in live:
                out.append(f"{sub}: removed from Git, still live")
        return out
    if isinstance(desired, list) and isinstance(live, list):
        if len(desired) != len(live):
            return [f"{path}: {len(desired)} items in Git, {len(live)} live"]
        lasts = (
            last if isinstance(last, list) and len(last) == len(desired) else [None] * len(desired)
        )
        return [
            d
            for i, (a, b, c) in enumerate(zip(desired, live, lasts, strict=True))
            for d in legacy_three_way_drift(a, b, c, f"{path}[{i}]")
        ]
    return [] if desired == live else [f"{path}: Git {desired!r} != live {live!r}"]


def test_there_are_examples_to_check() -> None:
    assert len(EXAMPLES) >= 3, [p.name for p in EXAMPLES]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_an_applied_example_shows_no_drift(example: Path, admitted: str, kubectl: Kubectl) -> None:
    docs = workspaces_in(example)
    if "too-small" in example.stem:
        refused = kubectl("apply", "-n", admitted, "-f", str(example), check=False)
        assert refused.returncode != 0, refused.stdout
        assert "does not fit" in refused.stderr, refused.stderr
        return
    assert len(docs) == 1, f"{example.name}: expected one Workspace, found {len(docs)}"
    desired = docs[0]
    kubectl("apply", "-n", admitted, "-f", str(example))
    diff = kubectl("diff", "-n", admitted, "-f", str(example), check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    again = kubectl("apply", "-n", admitted, "-f", str(example))
    assert "unchanged" in again.stdout, again.stdout
    name = desired["metadata"]["name"]
    group, version = desired["apiVersion"].split("/")
    resource = f"workspaces.{version}.{group}"  # live as ArgoCD reads it: in Git's version
    live = json.loads(kubectl("get", resource, "-n", admitted, name, "-o", "json").stdout)
    last = json.loads(live["metadata"]["annotations"][LAST_APPLIED])
    for obj in (desired, live, last):
        obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in SERVER_OWNED_META}
        obj["metadata"].get("annotations", {}).pop(LAST_APPLIED, None)
        if not obj["metadata"].get("annotations", True):
            del obj["metadata"]["annotations"]  # kubectl records `annotations: {}` for itself
        obj.pop("status", None)
    assert legacy_three_way_drift(desired, live, last) == []
    assert live != desired, "the webhook expanded nothing: the check above proved little"


def test_the_three_way_reproduction_does_see_real_drift() -> None:
    desired = {
        "resource": {"count": 1, "instanceType": "A"},
        "inference": {"preset": {"name": "x"}},
    }
    live = {
        "resource": {"count": 2, "instanceType": "A", "extra": 1},
        "inference": {"preset": {"name": "x"}},
    }
    assert legacy_three_way_drift(desired, live, desired) == [".resource.count: Git 1 != live 2"]
    dropped = {"resource": {"instanceType": "A"}}
    assert legacy_three_way_drift(dropped, live, desired) == [
        ".inference: removed from Git, still live",
        ".resource.count: removed from Git, still live",
    ]
