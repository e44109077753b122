"""The image tooling itself: requirement lists derived from setup.cfg, the Dockerfile
parsing behind the content hash, and our own dockerd (started, reachable, stopped, and a
start that cannot succeed failing with the reason).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rig.images import build, dockerd

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "images" / "requirements.py"


def reqs(which: str) -> list[str]:
    out = subprocess.run([sys.executable, str(SCRIPT), which], capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.split()


def names(requirements: list[str]) -> set[str]:
    return {r.split("==")[0] for r in requirements}


def test_the_operator_installs_setup_cfgs_install_requires_and_no_torch() -> None:
    operator = reqs("operator")
    assert "kubernetes==37.0.2" in operator or any(r.startswith("kubernetes==") for r in operator)
    assert not names(operator) & {"torch", "transformers", "peft"}


def test_the_runtime_installs_the_runtime_extra_without_the_operators_clients() -> None:
    runtime = names(reqs("runtime"))
    assert {"torch", "transformers", "peft", "flask", "gunicorn", "oras"} <= runtime
    assert not runtime & {"kubernetes", "azure-identity", "azure-mgmt-containerservice"}


def test_every_listed_requirement_is_pinned_exactly() -> None:
    for which in ("operator", "runtime", "front"):
        for requirement in reqs(which):
            assert "==" in requirement, f"{which}: {requirement} is not pinned"


def test_a_wheels_requirements_skip_extras_markers_and_media_packages(tmp_path: Path) -> None:
    import zipfile

    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo-1.0.dist-info/METADATA", "\n".join([
            "Name: demo", "Requires-Dist: regex", "Requires-Dist: torchvision",
            "Requires-Dist: torchaudio; platform_machine != \"s390x\"",
            "Requires-Dist: pandas; extra == \"bench\"",
            "Requires-Dist: zentorch; platform_machine == \"nope\"",
            "Requires-Dist: torch==2.13.0+cpu; platform_machine == \"x86_64\""]))
    out = subprocess.run([sys.executable, str(SCRIPT), "wheel", str(wheel)],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["regex", "torch==2.13.0+cpu"]


def test_copy_and_from_lines_are_read_as_docker_reads_them() -> None:
    text = ("ARG ENGINE=x/y:v1\nFROM debian:12.15-slim AS build\n"
            "COPY setup.cfg images/requirements.py /src/\n"
            "COPY --from=build /opt/venv /opt/venv\nFROM build AS two\n"
            "COPY --chown=1:1 runtime/ \\\n  /app/runtime/\nFROM ${ENGINE}\n")
    assert build.copied_paths(text) == ["setup.cfg", "images/requirements.py", "runtime"]
    assert build.bases(text) == ["debian:12.15-slim"]


def test_the_content_hash_changes_with_a_copied_file_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "images" / "x").mkdir(parents=True)
    (repo / "images" / "x" / "Dockerfile").write_text("FROM debian:12.15-slim\nCOPY a/ /a/\n")
    (repo / "a").mkdir()
    (repo / "a" / "m.py").write_text("one")
    (repo / "unrelated.txt").write_text("one")
    monkeypatch.setattr(build, "REPO", repo)
    image = build.Image("x", "x", "operator")
    first = build.assemble(image, tmp_path / "ctx")
    assert sorted(str(p.relative_to(tmp_path / "ctx")) for p in (tmp_path / "ctx").rglob("*")
                  if p.is_file()) == ["a/m.py", "images/x/Dockerfile"]
    (repo / "unrelated.txt").write_text("two")
    (repo / "a" / "__pycache__").mkdir()
    (repo / "a" / "__pycache__" / "m.cpython-311.pyc").write_text("cache")
    assert build.assemble(image, tmp_path / "ctx") == first
    (repo / "a" / "m.py").write_text("two")
    assert build.assemble(image, tmp_path / "ctx") != first


def test_our_dockerd_starts_answers_and_stops(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dockerd, "STATE", tmp_path / "d")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(dockerd, "SYSTEM_SOCKET", f"unix://{tmp_path}/none.sock")
    try:
        engine = dockerd.ensure()
    except RuntimeError as exc:
        pytest.fail(f"dockerd could not start: {exc}", pytrace=False)
    try:
        assert engine.ours
        assert engine.host == f"unix://{tmp_path}/d/docker.sock"
        info = engine.run("info", "--format", "{{.Driver}}").stdout.strip()
        assert info == "overlay2"
    finally:
        assert dockerd.stop()
    assert not dockerd.reachable(engine.client, engine.host)
    assert not dockerd.stop()


def test_a_dockerd_that_cannot_start_fails_with_its_log(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "d"
    state.mkdir()
    (state / "data").write_text("a file where the data root must be a folder")
    monkeypatch.setattr(dockerd, "STATE", state)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(dockerd, "SYSTEM_SOCKET", f"unix://{tmp_path}/none.sock")
    with pytest.raises(RuntimeError, match="dockerd did not become reachable") as err:
        dockerd.ensure(timeout=60)
    assert str(state / "data") in str(err.value)
