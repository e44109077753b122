"""`org/name` models the catalog lacks are sized from their own config.json + safetensors index.

The Hub stand-in serves only the two small files a real 7B and a real 70B-class repository
hold (numbers as in their config.json and index), plus a single-file tiny model whose size
comes from the tree listing. The reconciler's preparation and `kaito fit` must agree: the
right node count for one, a refusal carrying the fit message for the other. Admission never
fetches: it only warns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from presets.catalog import load_catalog
from presets.fit import fit_report
from presets.validate import validate_object, warnings_for
from reconciler.expansion import SpecError, prepare
from reconciler.hfsizing import SizingError, catalog_for, size_hf_model
from rig.hubstub import HubStub, running_hub

REPO = Path(__file__).resolve().parents[2]
CATALOG = load_catalog()
QWEN_LIKE = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
             "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
             "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}
BIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
       "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
       "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}


def _repo(root: Path, config: dict[str, Any], total: int) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    index = {"metadata": {"total_size": total},
             "weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStub]:
    root = tmp_path_factory.mktemp("hf")
    with running_hub() as stub:
        stub.add_repo("acme/qwen-like-7b", _repo(root / "q", QWEN_LIKE, 15_231_233_024))
        stub.add_repo("acme/big-70b", _repo(root / "b", BIG, 141_107_412_992))
        yield stub


def _ws(model: str, sku: str, **resource: Any) -> dict[str, Any]:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": "hf", "namespace": "default"},
            "resource": {"instanceType": sku, "labelSelector": {"matchLabels": {"a": "b"}},
                         **resource},
            "inference": {"preset": {"name": model}}}


def test_a_model_is_sized_from_its_config_and_index(hub: HubStub) -> None:
    spec = size_hf_model("acme/qwen-like-7b", endpoint=hub.endpoint)
    assert spec.weights_gib == round(15_231_233_024 / 1024**3, 2)
    assert spec.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2  # layers x KV heads x head dim
    assert spec.context_length == 32768
    assert spec.runtime == "vllm"
    assert [r.path for r in hub.requests if "/resolve/" in r.path] == [
        "/acme/qwen-like-7b/resolve/main/config.json",
        "/acme/qwen-like-7b/resolve/main/model.safetensors.index.json",
    ]


def test_a_single_file_model_is_sized_from_the_tree_listing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**QWEN_LIKE, "num_hidden_layers": 2}))
    size = 30 * 1024 * 1024 + 7
    (tmp_path / "model.safetensors").write_bytes(b"\0" * size)  # sized, never parsed
    with running_hub() as stub:
        stub.add_repo("acme/one-file", tmp_path)
        spec = size_hf_model("acme/one-file", endpoint=stub.endpoint)
        assert not any(r.path.startswith("/_cdn/") for r in stub.requests)  # no weight bytes
    assert spec.weights_gib == round(size / 1024**3, 2)
    assert spec.num_layers == 2


def test_the_reconciler_gets_the_node_count_and_refuses_what_cannot_fit(hub: HubStub) -> None:
    fits = _ws("acme/qwen-like-7b", "Standard_NC24ads_A100_v4")
    assert validate_object(fits, CATALOG) == []  # admission: no network, a warning only
    assert any("reconciler sizes it" in w for w in warnings_for(fits, CATALOG))
    prep = prepare(fits, catalog_for(CATALOG, "acme/qwen-like-7b", endpoint=hub.endpoint))
    assert prep.resolved.node_count == 1
    assert prep.resolved.model is not None
    assert prep.resolved.model.hf_id == "acme/qwen-like-7b"

    # The same shapes and bytes as the catalog's Llama 3.3 70B: the same layout.
    spread = _ws("acme/big-70b", "Standard_NC24ads_A100_v4")
    prep = prepare(spread, catalog_for(CATALOG, "acme/big-70b", endpoint=hub.endpoint))
    preset = fit_report("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", catalog=CATALOG)
    assert prep.resolved.node_count == preset.nodes > 1
    assert prep.resolved.layout == preset.layout

    too_small = _ws("acme/big-70b", "Standard_NC6s_v3", count=1)
    with pytest.raises(SpecError) as refused:
        prepare(too_small, catalog_for(CATALOG, "acme/big-70b", endpoint=hub.endpoint))
    assert "acme/big-70b" in refused.value.message
    assert "GiB" in refused.value.message
    print(refused.value.message)


def test_an_unreachable_or_gated_model_is_a_clear_sizing_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(QWEN_LIKE))
    with running_hub() as stub:
        stub.add_repo("acme/gated", tmp_path, gated=True, tokens=("hf_x",))
        with pytest.raises(SizingError, match="gated or private"):
            size_hf_model("acme/gated", endpoint=stub.endpoint)
        with pytest.raises(SizingError, match="HTTP 401"):
            size_hf_model("acme/missing", endpoint=stub.endpoint)


def test_kaito_fit_sizes_an_org_name_id(hub: HubStub) -> None:
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint}
    ok = subprocess.run([sys.executable, "-m", "kaito", "fit", "acme/qwen-like-7b",
                         "--instance-type", "Standard_NC24ads_A100_v4", "-o", "json"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["fits"] is True
    no = subprocess.run([sys.executable, "-m", "kaito", "fit", "acme/big-70b",
                         "--instance-type", "Standard_NC6s_v3", "--count", "1"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                        check=False)
    assert no.returncode == 1, no.stderr
    assert "acme/big-70b" in no.stdout
