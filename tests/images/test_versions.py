"""One version, one place: setup.cfg's version is every image tag, the manifests' `images:`
and the catalog's image fields; the vLLM release is the same in both flavours.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from rig.images import build

REPO = Path(__file__).resolve().parents[2]


def test_image_tags_follow_setup_cfg() -> None:
    version = build.version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    tags = {i.folder: i.tag(version) for i in build.IMAGES}
    assert tags["operator"] == f"ghcr.io/kaito-py/kaito:{version}"
    assert tags["vllm-runtime"] == f"ghcr.io/kaito-py/vllm-runtime:{version}-cpu"


def test_the_manifests_pin_the_operator_at_that_version() -> None:
    kustomization = yaml.safe_load((REPO / "manifests/base/kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "ghcr.io/kaito-py/kaito",
                                        "newTag": build.version()}]


def test_the_catalog_names_our_images_at_that_version() -> None:
    catalog = yaml.safe_load((REPO / "presets/models.yaml").read_text())
    version = build.version()
    expected = {"vllm": f"ghcr.io/kaito-py/vllm-runtime:{version}",
                "transformers": f"ghcr.io/kaito-py/cpu-runtime:{version}",
                "tuning": f"ghcr.io/kaito-py/tuning-runtime:{version}"}
    # vLLM's CPU image: the tag the image build gives it
    cpu = next(i for i in build.IMAGES if i.folder == "vllm-runtime").tag(version)
    assert catalog["images"] == {**expected, "vllm-cpu": cpu}
    for model in catalog["models"]:
        if "image" in model:
            assert model["image"] == expected[model["runtime"]], model["name"]


def test_both_vllm_flavours_are_the_same_vllm_release() -> None:
    gpu = build.dockerfile_arg("vllm-runtime", "ENGINE")
    cpu = build.dockerfile_arg("vllm-runtime", "VLLM_CPU_VERSION")
    assert gpu == f"vllm/vllm-openai:v{cpu}"


def test_every_dockerfile_defaults_its_version_label_to_setup_cfg() -> None:
    for image in build.IMAGES:
        assert build.dockerfile_arg(image.folder, "VERSION") == build.version(), image.folder
