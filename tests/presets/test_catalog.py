"""The shipped catalogs load and hold what the issue promises; a broken one fails loudly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from presets.catalog import (
    INSTANCE_TYPES_FILE,
    MODELS_FILE,
    Catalog,
    CatalogError,
    kv_bytes_per_token,
    load_catalog,
)
from presets.catalog_checks import IMAGE_KEYS

KAITO_PRESET_NAMES = (
    "phi-3-mini-4k-instruct",
    "phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct",
    "phi-3.5-mini-instruct",
    "phi-4",
    "phi-4-mini-instruct",
    "mistral-7b",
    "mistral-7b-instruct",
    "falcon-7b",
    "falcon-7b-instruct",
    "falcon-40b",
    "falcon-40b-instruct",
    "llama-3.1-8b-instruct",
    "llama-3.3-70b-instruct",
    "qwen2.5-7b-instruct",
    "qwen2.5-coder-7b-instruct",
    "qwen2.5-coder-32b-instruct",
    "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-14b",
    "gemma-3-4b-instruct",
    "gemma-3-27b-instruct",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "smollm2-135m-instruct",
    "smollm2-360m-instruct",
    "deepseek-r1-0528",
    "deepseek-v3-0324",
    "mistral-large-3-675b-instruct",
    "ministral-3-3b-instruct",
    "ministral-3-8b-instruct",
    "ministral-3-14b-instruct",
)
# Kaito presets of the v1alpha1 days: the user brought the image (accessMode private).
PRIVATE_PRESET_NAMES = tuple(
    f"llama-2-{size}{chat}" for size in ("7b", "13b", "70b") for chat in ("", "-chat")
)
MLA_PRESETS = ("deepseek-r1-0528", "deepseek-v3-0324", "mistral-large-3-675b-instruct")


def test_the_shipped_catalogs_load(catalog: Catalog) -> None:
    assert len(catalog.models) >= 20
    assert set(KAITO_PRESET_NAMES) <= set(catalog.models)
    assert {t.cloud for t in catalog.instance_types.values()} == {"azure", "aws", "gcp"}
    assert any(t.gpu_count == 0 for t in catalog.instance_types.values())
    assert catalog.cost_source
    assert catalog.cost_date == "2025-06-01"


def test_model_facts_give_kv_bytes_per_token(catalog: Catalog) -> None:
    phi = catalog.model("phi-3-mini-4k-instruct")
    llama = catalog.model("llama-3.3-70b-instruct")
    assert phi is not None
    assert llama is not None
    assert phi.kv_bytes_per_token == 2 * 32 * 32 * 96 * 2 == 393216
    assert llama.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2 == 327680
    assert llama.access == "token"
    assert phi.access == "public"


def test_every_image_is_pinned(catalog: Catalog) -> None:
    images = [m.image for m in catalog.models.values() if m.image is not None]
    images += list(catalog.images.values())
    assert len(images) == len(catalog.models) - len(PRIVATE_PRESET_NAMES) + len(IMAGE_KEYS)
    assert all(":" in i.rsplit("/", 1)[-1] and not i.endswith(":latest") for i in images)


def test_private_presets_have_no_image_of_ours(catalog: Catalog) -> None:
    private = sorted(m.name for m in catalog.models.values() if m.access == "private")
    assert private == sorted(PRIVATE_PRESET_NAMES)
    for name in private:
        model = catalog.models[name]
        assert model.image is None
        assert not model.tuning
        assert model.license == "llama2"


def test_mla_presets_cache_the_latent_not_k_and_v(catalog: Catalog) -> None:
    for name in MLA_PRESETS:
        model = catalog.models[name]
        assert (model.num_layers, model.kv_lora_rank, model.qk_rope_head_dim) == (61, 512, 64)
        assert model.kv_bytes_per_token == 61 * (512 + 64) * 2 == 70272
        assert model.dtype == "fp8"
    gqa = catalog.models["ministral-3-14b-instruct"]
    assert (gqa.kv_lora_rank, gqa.qk_rope_head_dim) == (None, None)
    assert gqa.kv_bytes_per_token == 2 * 40 * 8 * 128 * 2 == 163840


def test_kv_bytes_per_token_for_both_attention_kinds() -> None:
    assert kv_bytes_per_token(32, 8, 128) == 131072
    assert kv_bytes_per_token(32, 8, 128, kv_lora_rank=512, qk_rope_head_dim=64) == 36864
    assert kv_bytes_per_token(32, 8, 128, kv_lora_rank=512) == 131072


def test_a_deprecated_preset_names_live_replacements(catalog: Catalog) -> None:
    phi2 = catalog.models["phi-2"]
    assert phi2.deprecated
    assert phi2.replaced_by == ("phi-4-mini-instruct", "phi-3.5-mini-instruct")
    assert all(not catalog.models[n].deprecated for n in phi2.replaced_by)
    assert [m.name for m in catalog.models.values() if m.deprecated] == ["phi-2"]


def test_cpu_presets_use_the_transformers_runtime(catalog: Catalog) -> None:
    for name in ("smollm2-135m-instruct", "smollm2-360m-instruct"):
        model = catalog.model(name)
        assert model is not None
        assert model.runtime == "transformers"
        assert not model.distributed


def test_instance_types_are_found_case_insensitively(catalog: Catalog) -> None:
    found = catalog.instance_type("standard_nc6s_v3")
    assert found is not None
    assert found.name == "Standard_NC6s_v3"
    assert found.gpu_memory_gib == 16
    assert catalog.instance_type("Standard_Nope") is None


def test_the_revision_is_a_content_hash(tmp_path: Path, catalog: Catalog) -> None:
    assert load_catalog().revision == catalog.revision
    doc = yaml.safe_load(INSTANCE_TYPES_FILE.read_text())
    doc["instanceTypes"][0]["relativeCost"] = 9.5
    changed = tmp_path / "types.yaml"
    changed.write_text(yaml.safe_dump(doc))
    assert load_catalog(instance_types=changed).revision != catalog.revision
    comment_only = tmp_path / "models.yaml"
    comment_only.write_text("# a comment changes nothing\n" + MODELS_FILE.read_text())
    assert load_catalog(models=comment_only).revision == catalog.revision


def _broken_models(tmp_path: Path) -> Path:
    doc = yaml.safe_load(MODELS_FILE.read_text())
    doc["models"][0]["weightsGiB"] = -1
    doc["models"][1]["image"] = "ghcr.io/kaito-py/vllm-runtime:latest"
    doc["models"][2]["runtime"] = "tgi"
    doc["models"][3]["name"] = doc["models"][4]["name"]
    del doc["models"][5]["contextLength"]
    doc["models"][6]["typo"] = 1
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_broken_catalog_fails_with_every_problem(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog(models=_broken_models(tmp_path))
    problems = "\n".join(info.value.problems)
    assert len(info.value.problems) == 6, problems
    for fragment in (
        "weightsGiB: must be a number > 0",
        "pinned",
        "runtime: must be one of",
        "duplicate of models[3]",
        "contextLength: is required",
        "unknown field 'typo'",
    ):
        assert fragment in problems


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param(
            {"gpuCount": 0},
            "gpuMemoryGiB must be > 0 exactly when gpuCount > 0",
            id="gpus-without-count",
        ),
        pytest.param({"relativeCost": 0}, "relativeCost: must be a number > 0", id="free-sku"),
        pytest.param({"cloud": "ibm"}, "cloud: must be one of", id="unknown-cloud"),
        pytest.param({"gpuCount": "2"}, "gpuCount: must be an integer", id="string-count"),
    ],
)
def test_broken_instance_types_are_named(
    tmp_path: Path, change: dict[str, object], fragment: str
) -> None:
    doc = yaml.safe_load(INSTANCE_TYPES_FILE.read_text())
    gpu_entry = next(t for t in doc["instanceTypes"] if t["gpuCount"] > 0)
    gpu_entry.update(change)
    path = tmp_path / "types.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CatalogError) as info:
        load_catalog(instance_types=path)
    assert any(fragment in p and gpu_entry["name"] in p for p in info.value.problems), (
        info.value.problems
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("models: [", "not valid YAML", id="bad-yaml"),
        pytest.param("[]", "images: must be a mapping", id="not-a-mapping"),
        pytest.param("images: {}\nmodels: []", "models: must be a non-empty list", id="empty"),
    ],
)
def test_unusable_files_are_reported(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as info:
        load_catalog(models=path)
    assert any(fragment in p for p in info.value.problems), info.value.problems


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog(models=tmp_path / "absent.yaml")
    assert "cannot read" in info.value.problems[0]


def _edit(doc: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(m for m in doc["models"] if m["name"] == name)
    return entry


@pytest.mark.parametrize(
    ("name", "change", "drop", "fragment"),
    [
        pytest.param(
            "llama-2-7b",
            {"image": "ghcr.io/kaito-py/vllm-runtime:0.1.0"},
            (),
            "a private preset has no image",
            id="private-with-image",
        ),
        pytest.param(
            "phi-4", {}, ("image",), "image: is required unless access is private", id="no-image"
        ),
        pytest.param(
            "llama-2-7b",
            {"tuning": True, "loraTargetModules": ["q_proj"]},
            (),
            "a private preset cannot be a tuning preset",
            id="private-tuning",
        ),
        pytest.param(
            "deepseek-r1-0528",
            {},
            ("qkRopeHeadDim",),
            "kvLoraRank and qkRopeHeadDim go together",
            id="half-mla",
        ),
        pytest.param(
            "deepseek-r1-0528",
            {"kvLoraRank": "512"},
            (),
            "kvLoraRank: must be an integer",
            id="mla-type",
        ),
        pytest.param("phi-2", {}, ("replacedBy",), "needs replacedBy", id="no-replacement"),
        pytest.param(
            "phi-4", {"replacedBy": ["phi-4-mini-instruct"]}, (), "only for a deprecated", id="live"
        ),
        pytest.param(
            "phi-2",
            {"replacedBy": ["phi-5"]},
            (),
            "replacedBy: 'phi-5' is not a preset that is still supported",
            id="unknown-replacement",
        ),
        pytest.param(
            "phi-2",
            {"replacedBy": ["phi-2"]},
            (),
            "replacedBy: 'phi-2' is not a preset that is still supported",
            id="deprecated-replacement",
        ),
        pytest.param(
            "phi-2", {"deprecated": "yes"}, (), "deprecated: must be true or false", id="flag-type"
        ),
        pytest.param("phi-4", {"access": "secret"}, (), "access: must be one of", id="access"),
        pytest.param("phi-4", {"vllmOnCpu": True}, (), "vllmOnCpu is for transformers presets",
                     id="vllm-on-cpu-of-a-vllm-preset"),
    ],
)
def test_broken_model_rules_are_named(
    tmp_path: Path, name: str, change: dict[str, object], drop: tuple[str, ...], fragment: str
) -> None:
    doc = yaml.safe_load(MODELS_FILE.read_text())
    entry = _edit(doc, name)
    entry.update(change)
    for key in drop:
        del entry[key]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CatalogError) as info:
        load_catalog(models=path)
    assert any(fragment in p and name in p for p in info.value.problems), info.value.problems


def test_the_migration_guide_lists_every_preset(catalog: Catalog) -> None:
    guide = (MODELS_FILE.parents[1] / "docs" / "migrating-from-kaito.md").read_text()
    missing = [name for name in catalog.models if f"`{name}`" not in guide]
    assert missing == [], f"docs/migrating-from-kaito.md does not list {missing}"
    assert "phi-2 is deprecated and no longer supported" in " ".join(guide.split())
