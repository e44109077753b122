"""Fetch the two files that size a Hugging Face model the catalog lacks (I/O).

Why: a Workspace naming `org/name` is admitted with a warning (the webhook never waits on
the network); the reconciler then reads the model's config.json and its safetensors index
(or, for a single-file model, the file sizes from the Hub's tree listing), sizes it with
presets.hfmodel and checks the fit like any preset's, so the node count is right and a
model too large for the instance type is refused in status with the fit message. `kaito
fit org/name` uses the same code. Answers are kept per process (a model's files at `main`
do not change between passes often enough to fetch them every pass); failures are not kept.
It must not send a token anywhere but the configured endpoint, nor read more than
MAX_JSON_BYTES of any file.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping
from typing import Any

import requests

from presets.catalog import Catalog, ModelSpec
from presets.hfmodel import HfModelError, spec_from_hf, weights_bytes, with_model

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_JSON_BYTES = 8 << 20
TIMEOUT_S = 10.0
_CACHE: dict[tuple[str, str], ModelSpec] = {}
_LOCK = threading.Lock()


class SizingError(ValueError):
    """The model's files could not be read; the message says why (for status)."""


def _get_json(url: str, headers: Mapping[str, str], *, missing_ok: bool) -> Any:
    try:
        response = requests.get(url, headers=dict(headers), timeout=TIMEOUT_S, stream=True)
    except requests.RequestException as exc:
        raise SizingError(f"cannot reach {url.split('/resolve/')[0]}: {exc}") from exc
    with response:
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code in (401, 403):
            raise SizingError(f"{url}: HTTP {response.status_code} (gated or private model: "
                              "it cannot be sized without access)")
        if response.status_code != 200:
            raise SizingError(f"{url}: HTTP {response.status_code}")
        body = response.raw.read(MAX_JSON_BYTES + 1, decode_content=True)
    if len(body) > MAX_JSON_BYTES:
        raise SizingError(f"{url}: larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SizingError(f"{url}: not JSON") from exc


def _file_sizes(endpoint: str, hf_id: str, headers: Mapping[str, str]) -> dict[str, int]:
    listing = _get_json(f"{endpoint}/api/models/{hf_id}/tree/main?recursive=true", headers,
                        missing_ok=False)
    sizes: dict[str, int] = {}
    for entry in listing if isinstance(listing, list) else []:
        if isinstance(entry, Mapping) and entry.get("type") == "file":
            lfs = entry.get("lfs")
            size = lfs.get("size") if isinstance(lfs, Mapping) else entry.get("size")
            if isinstance(size, int):
                sizes[str(entry.get("path"))] = size
    return sizes


def size_hf_model(hf_id: str, *, endpoint: str = "", token: str = "",
                  image: str | None = None) -> ModelSpec:
    """The sized ModelSpec of `hf_id` (fetched once per process and endpoint)."""
    base = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
    with _LOCK:
        cached = _CACHE.get((base, hf_id))
    if cached is not None:
        return cached if cached.image == image else dataclasses.replace(cached, image=image)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resolve = f"{base}/{hf_id}/resolve/main"
    config = _get_json(f"{resolve}/config.json", headers, missing_ok=False)
    if not isinstance(config, Mapping):
        raise SizingError(f"{hf_id}: config.json is not a JSON object")
    index = _get_json(f"{resolve}/model.safetensors.index.json", headers, missing_ok=True)
    sizes = {} if isinstance(index, Mapping) and index.get("metadata") else _file_sizes(
        base, hf_id, headers)
    try:
        spec = spec_from_hf(hf_id, config, weights_bytes(index, sizes), image=image)
    except HfModelError as exc:
        raise SizingError(str(exc)) from exc
    with _LOCK:
        _CACHE[(base, hf_id)] = spec
    return spec


def catalog_for(catalog: Catalog, hf_id: str, *, endpoint: str = "",
                token: str = "") -> Catalog:
    """`catalog` plus the sized `hf_id` (served by the catalog's vLLM image)."""
    spec = size_hf_model(hf_id, endpoint=endpoint, token=token,
                         image=catalog.images.get("vllm"))
    return with_model(catalog, spec)
