"""Weights from a Hugging Face Hub (or a mirror at HF_ENDPOINT) into the node cache.

Why: most presets are served from their Hugging Face repository at the revision the
catalog pins. `huggingface_hub.snapshot_download` does the transfer into `hub/` of the
node cache (its own layout: blobs named by sha256 or git blob id, snapshots of symlinks);
around it this module takes the model's node lock, reports progress, checks every file
against the id it is stored under, and writes the completion record that lets the next
start skip the network entirely. Gated repositories use the token of
`presetOptions.modelAccessSecret` (env HF_TOKEN); the endpoint is read at call time, so
HF_ENDPOINT works even when huggingface_hub was imported before it was set.

It must not go online when told to stay offline, and it must not return a snapshot whose
files do not match their ids.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path

from runtime.weights.cache import Progress, key_for, model_lock, read_complete, write_complete
from runtime.weights.errors import WeightsError
from runtime.weights.settings import WeightsSettings

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SHA1 = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_REVISION = "main"


def hub_key(repo_id: str, revision: str | None) -> str:
    return key_for("hub", repo_id, revision or DEFAULT_REVISION)


def hub_weights(repo_id: str, revision: str | None, settings: WeightsSettings,
                log: logging.Logger) -> tuple[Path, bool]:
    """The local snapshot of `repo_id` at `revision`, and whether it was downloaded now."""
    key = hub_key(repo_id, revision)
    local = read_complete(settings.cache, key)
    if local is not None:
        log.info("weights: %s@%s: in the node cache at %s, no download", repo_id,
                 revision or DEFAULT_REVISION, local)
        return local, False
    with model_lock(settings.cache, key, log):
        local = read_complete(settings.cache, key)
        if local is not None:  # another pod on this node finished it while we waited
            log.info("weights: %s: fetched by another process, no download", repo_id)
            return local, False
        path = _download(repo_id, revision, settings, key, log)
    return path, True


def _download(repo_id: str, revision: str | None, settings: WeightsSettings, key: str,
              log: logging.Logger) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()  # our own progress lines replace the bars
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request otherwise
    storage = settings.cache / "hub"
    what = f"{repo_id}@{revision or DEFAULT_REVISION}"
    if settings.offline:
        log.info("weights: %s: offline (told), looking in the node cache only", what)
    else:
        log.info("weights: %s: downloading from %s", what, settings.endpoint or "huggingface.co")
    started = time.monotonic()
    watch = storage / ("models--" + repo_id.replace("/", "--")) / "blobs"
    total = None if settings.offline else _total_bytes(repo_id, revision, settings)
    try:
        with Progress(settings.cache, key, watch, total, log):
            folder = snapshot_download(
                repo_id,
                revision=revision or DEFAULT_REVISION,
                cache_dir=storage,
                endpoint=settings.endpoint,
                token=settings.token or False,
                local_files_only=settings.offline,
            )
    except Exception as exc:  # huggingface_hub raises many kinds; each is mapped or re-raised
        raise _explain(exc, what, settings) from exc
    path = Path(folder)
    checked = verify_snapshot(path)
    if not (path / "config.json").is_file():
        raise WeightsError(f"{what}: the repository has no config.json; not a transformers model")
    write_complete(settings.cache, key, {"path": str(path), "source": "hub", "repo": repo_id,
                                         "revision": revision or DEFAULT_REVISION,
                                         "bytes": checked, "seconds": round(
                                             time.monotonic() - started, 2)})
    log.info("weights: %s: %d bytes in %s, checked, in %.1f s", what, checked, path,
             time.monotonic() - started)
    return path


def _total_bytes(repo_id: str, revision: str | None, settings: WeightsSettings) -> int | None:
    """The repository's size for progress lines; None when the listing is unavailable."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=settings.endpoint, token=settings.token or False)
    try:
        files = api.list_repo_tree(repo_id, revision=revision or DEFAULT_REVISION, recursive=True)
        return sum(int(getattr(f, "size", 0) or 0) for f in files)
    except (HfHubHTTPError, OSError):
        return None  # snapshot_download reports the real error next, with its own words


def verify_snapshot(folder: Path) -> int:
    """Check each file against the blob id it is stored under; return the bytes checked."""
    total = 0
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        blob = Path(os.path.realpath(path))
        name = blob.name
        data_size = blob.stat().st_size
        if SHA256.match(name):
            if _sha256(blob) != name:
                blob.unlink(missing_ok=True)
                raise WeightsError(f"{path.name}: content does not match its sha256 {name}")
        elif SHA1.match(name) and _git_blob_sha1(blob) != name:
            blob.unlink(missing_ok=True)
            raise WeightsError(f"{path.name}: content does not match its git blob id {name}")
        total += data_size
    return total


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _explain(exc: Exception, what: str, settings: WeightsSettings) -> Exception:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        if not settings.token:
            return WeightsError(f"{what} is gated: set presetOptions.modelAccessSecret to a "
                                "Secret whose HF_TOKEN has access to it")
        return WeightsError(f"{what} is gated and the token of presetOptions.modelAccessSecret "
                            "has no access to it (HTTP 403); request access on its model page")
    if isinstance(exc, RevisionNotFoundError):
        return WeightsError(f"{what}: the revision does not exist in the repository")
    if isinstance(exc, RepositoryNotFoundError):
        return WeightsError(f"{what}: repository not found (or private: "
                            "presetOptions.modelAccessSecret must name a token that can read it)")
    if isinstance(exc, LocalEntryNotFoundError):
        where = settings.endpoint or "https://huggingface.co"
        if settings.offline:
            return WeightsError(f"{what}: offline (KAITO_WEIGHTS_OFFLINE=1) and not in the node "
                                "cache; pull it first or allow downloads")
        return WeightsError(f"{what}: cannot reach {where} and the node cache has no copy "
                            f"({exc.__cause__ or exc})")
    if isinstance(exc, HfHubHTTPError):
        return WeightsError(f"{what}: the hub answered: {str(exc).splitlines()[0]}")
    if isinstance(exc, OSError):
        return WeightsError(f"{what}: {exc}")
    return exc
