"""The `kaito` console script, run as a user runs it: exit codes, stdout, stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.presets.factories import EXAMPLES

KAITO = Path(sys.executable).parent / "kaito"


def kaito(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert KAITO.exists(), f"{KAITO} is missing: run `pip install -e .` (hack/bootstrap.sh does)"
    return subprocess.run(
        [str(KAITO), *args], capture_output=True, text=True, input=stdin, timeout=60, check=False
    )


def test_render_prints_the_seed_examples_as_stored() -> None:
    result = kaito("render", "-f", str(EXAMPLES / "kaito_workspace_phi_3.yaml"))
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert doc["resource"]["count"] == 1
    assert doc["inference"]["preset"]["presetOptions"]["image"].startswith("ghcr.io/kaito-py/")


def test_rendering_a_rendered_file_changes_nothing(tmp_path: Path) -> None:
    first = kaito("render", "-f", str(EXAMPLES / "kaito_workspace_tuning_phi_3.yaml"))
    assert first.returncode == 0, first.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(first.stdout)
    second = kaito("render", "-f", str(rendered))
    assert second.returncode == 0
    assert second.stdout == first.stdout


def test_render_json_of_several_documents_is_a_list(tmp_path: Path) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(
        (EXAMPLES / "kaito_workspace_phi_3.yaml").read_text()
        + "---\n"
        + (EXAMPLES / "smollm2-135m-instruct.yaml").read_text()
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"
    )
    result = kaito("render", "-f", str(both), "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["kind"] == "List"
    assert [i["kind"] for i in doc["items"]] == [
        "Workspace",
        "Workspace",
        "ConfigMap",
    ]


def test_an_invalid_workspace_exits_1_with_name_path_and_message() -> None:
    result = kaito("render", "-f", str(EXAMPLES / "llama-3.3-70b-too-small.yaml"))
    assert result.returncode == 1
    assert result.stdout == ""
    line = result.stderr.splitlines()[0]
    name, path, message = line.split(": ", 2)
    assert (name, path) == ("workspace-llama-3-3-70b-too-small", "resource.instanceType")
    assert message.startswith("llama-3.3-70b-instruct does not fit")
    assert "14.4 GiB usable" in line
    assert "cheapest first" in line


@pytest.mark.parametrize(
    ("content", "name"),
    [
        pytest.param("a: [", "broken.yaml", id="bad-yaml"),
        pytest.param("- 1\n- 2\n", "list.yaml", id="not-a-mapping"),
    ],
)
def test_unreadable_input_exits_2(tmp_path: Path, content: str, name: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    for command in ("render", "validate"):
        result = kaito(command, "-f", str(path))
        assert result.returncode == 2
        assert result.stderr.startswith(f"kaito {command}: ")


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = kaito("validate", "-f", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_validate_is_silent_on_success(path: Path) -> None:
    result = kaito("validate", "-f", str(path))
    expected = 1 if "too-small" in path.name else 0
    assert result.returncode == expected, result.stderr
    assert result.stdout == ""


def test_validate_reads_stdin() -> None:
    result = kaito(
        "validate", "-f", "-", stdin=(EXAMPLES / "kaito_workspace_phi_3.yaml").read_text()
    )
    assert result.returncode == 0, result.stderr


def test_fit_json_and_exit_codes() -> None:
    ok = kaito("fit", "phi-3-mini-4k-instruct", "--instance-type", "Standard_NC6s_v3", "-o", "json")
    assert ok.returncode == 0
    report = json.loads(ok.stdout)
    assert report["fits"] is True
    assert report["nodes"] == 1
    assert {"required_gpu_memory_gib", "available_gpu_memory_gib", "suggestions"} <= set(report)
    no = kaito(
        "fit",
        "llama-3.3-70b-instruct",
        "--instance-type",
        "Standard_NC6s_v3",
        "--count",
        "1",
        "-o",
        "json",
    )
    assert no.returncode == 1
    assert json.loads(no.stdout)["suggestions"]
    text = kaito(
        "fit",
        "llama-3.3-70b-instruct",
        "--instance-type",
        "Standard_NC48ads_A100_v4",
        "--max-model-len",
        "4096",
    )
    assert text.returncode == 0
    assert "on 2 nodes" in text.stdout


def test_fit_with_an_unknown_model_exits_2_with_a_hint() -> None:
    result = kaito("fit", "phi3-mini", "--instance-type", "Standard_NC6s_v3")
    assert result.returncode == 2
    assert "unknown model" in result.stderr


def test_the_catalog_listings() -> None:
    presets = kaito("presets", "-o", "json")
    assert presets.returncode == 0
    assert len(json.loads(presets.stdout)["presets"]) >= 20
    table = kaito("presets")
    assert table.stdout.splitlines()[0].split()[:2] == ["NAME", "RUNTIME"]
    assert "phi-4" in table.stdout
    types = kaito("instance-types", "-o", "json")
    doc = json.loads(types.stdout)
    assert types.returncode == 0
    assert doc["costDate"]
    assert len(doc["instanceTypes"]) >= 40
    assert "Standard_NC6s_v3" in kaito("instance-types").stdout
