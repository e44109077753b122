"""No preset is both admitted and unservable: every catalog entry, walked.

For each preset, a Workspace on an instance type it fits is put through admission. If
admission refuses it, the reason must be one a user can act on (deprecated, private
without an image, gated without a token). If admission accepts it, the weights must be
loadable through the route the reconciler's command names:
- a preset the runtime image bakes: that image's Dockerfile converts exactly it;
- a private preset: the user's image (the command names the folder in it);
- otherwise the Hugging Face repository at the catalog's revision: the Hub stand-in
  serves a tiny checkpoint under that id and commit (gated ones only with the token the
  Workspace's modelAccessSecret would give), and the runtime's own code takes it into a
  node cache: our server's loader (transformers loads the architecture), or the vLLM
  front's `local_weights` (vLLM then gets a local folder and no --revision).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from crds.workspace import parse_workspace
from presets.catalog import ModelSpec, load_catalog
from presets.commands import PRIVATE_WEIGHTS_DIR, inference_command, weights_source
from presets.expand import expand_object, resolve
from presets.fit import fit_report
from presets.validate import validate_object
from rig.hubstub import HubStub, running_hub
from runtime.serving.vllm_front import local_weights
from runtime.weights import Source, WeightsSettings, ensure
from tests.support.tinyarch import FAMILY_ARCHITECTURES, build_tiny_like

REPO = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()
TOKEN = "hf_catalog_walk_token"
REFUSALS = {
    "deprecated": re.compile(r"is deprecated and no longer supported; use .+ instead"),
    "private": re.compile(r"presetOptions\.image|private"),
    "token": re.compile(r"modelAccessSecret"),
}


def _sku_that_fits(model: ModelSpec) -> str:
    for sku in sorted(CATALOG.instance_types.values(), key=lambda s: s.relative_cost):
        if (sku.gpu_count == 0) != (model.runtime == "transformers"):
            continue
        if fit_report(model, sku, catalog=CATALOG, with_suggestions=False).fits:
            return sku.name
    raise AssertionError(f"{model.name}: no catalog instance type fits it")


def _workspace(model: ModelSpec, **options: Any) -> dict[str, Any]:
    preset: dict[str, Any] = {"name": model.name}
    if options:
        preset["presetOptions"] = options
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": "walk", "namespace": "default"},
            "resource": {"instanceType": _sku_that_fits(model),
                         "labelSelector": {"matchLabels": {"a": "b"}}},
            "inference": {"preset": preset}}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    """The stand-in serving every public or gated catalog repository at its revision."""
    root = tmp_path_factory.mktemp("repos")
    built: dict[str, Path] = {}
    with running_hub() as stub:
        for model in CATALOG.models.values():
            if model.access == "private" or model.deprecated:
                continue
            family = model.family if model.family in FAMILY_ARCHITECTURES else "llama3"
            if family not in built:
                built[family] = build_tiny_like(family, root / family,
                                                tokenizer_dir=tiny_model_dir)
            stub.add_repo(model.hf_id, built[family], commit=model.revision,
                          gated=model.access == "token", tokens=(TOKEN,))
        yield stub


def _admitted(obj: dict[str, Any]) -> list[str]:
    return [e.message for e in validate_object(obj, CATALOG)]


@pytest.mark.parametrize("name", sorted(CATALOG.models))
def test_each_preset_is_refused_with_a_reason_or_its_weights_load(
    name: str, hub: HubStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = CATALOG.model(name)
    assert model is not None
    errors = _admitted(_workspace(model))
    if model.deprecated:
        assert any(REFUSALS["deprecated"].search(e) for e in errors), errors
        return
    if model.access in ("private", "token"):
        assert any(REFUSALS[model.access].search(e) for e in errors), errors
        fixed = ({"image": "registry.example/own/llama:1", "imagePullSecrets": ["pull"]}
                 if model.access == "private" else {"modelAccessSecret": "hf-token"})
        obj = _workspace(model, **fixed)
        assert _admitted(obj) == []
    else:
        obj = _workspace(model)
        assert errors == []
    ws = parse_workspace(expand_object(obj, CATALOG))
    resolved = resolve(ws, CATALOG)
    weights, revision = weights_source(ws.annotations, resolved)
    if model.access == "private":
        assert weights == PRIVATE_WEIGHTS_DIR  # the user's image holds them: nothing to fetch
        return
    if weights == model.name:  # baked into the runtime image at build time
        dockerfile = (REPO / "images" / "cpu-runtime" / "Dockerfile").read_text()
        assert f"resolve_model_dir('{model.name}'" in dockerfile
        return
    assert (weights, revision) == (model.hf_id, model.revision)
    settings = WeightsSettings(cache=tmp_path, endpoint=hub.endpoint,
                               token=TOKEN if model.access == "token" else None)
    if resolved.runtime == "transformers":
        folder = ensure(Source("hub", weights, revision), settings).path
        from transformers import AutoModelForCausalLM

        assert AutoModelForCausalLM.from_pretrained(folder) is not None
        return
    command = inference_command(ws, resolved)
    vllm_args = command[command.index("--") + 1 :]
    env = {"KAITO_WEIGHTS_CACHE": str(tmp_path), "HF_ENDPOINT": hub.endpoint}
    if model.access == "token":
        env["HF_TOKEN"] = TOKEN
    local = local_weights(vllm_args, env)
    folder = Path(local[local.index("--model") + 1])
    assert (folder / "config.json").is_file()
    assert "--revision" not in local
    assert env["HF_HUB_OFFLINE"] == "1"  # vLLM itself never goes to the Hub
