"""Fixtures of the end-to-end tier: the rig's kubectl (for kustomize) and rendered overlays.

Why: several e2e modules need `kubectl kustomize` output; rendering once per session keeps
the tier fast. It must not skip: when the rig cannot build kubectl, the tests fail with
the build's own message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kustomize import legacy_tree, render

OVERLAYS = ("karpenter", "aks", "byo")


@pytest.fixture(scope="session")
def rig_kubectl() -> Path:
    from rig import k8sbuild

    kubectl = k8sbuild.ensure_binaries() / "kubectl"
    assert kubectl.is_file(), f"the rig's build finished but {kubectl} is missing"
    return kubectl


@pytest.fixture(scope="session")
def legacy_manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return legacy_tree(tmp_path_factory.mktemp("kustomize"))


@pytest.fixture(scope="session")
def rendered(rig_kubectl: Path, legacy_manifests: Path) -> dict[str, list[dict[str, Any]]]:
    """overlay name -> its rendered documents; key "manifests" is `kubectl apply -k manifests/`."""
    out = {
        name: render(rig_kubectl, legacy_manifests / "manifests" / "overlays" / name)
        for name in OVERLAYS
    }
    out["manifests"] = render(rig_kubectl, legacy_manifests / "manifests")
    return out
