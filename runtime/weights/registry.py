"""Model weights as OCI artifacts: push a model folder, pull one into the node cache.

Why: air-gapped clusters cannot reach the Hub; `kaito model push PRESET REF` stores a
model's files in the cluster's registry and a Workspace names the artifact. A pod's init
container pulls it into `oci/sha256-<manifest digest>/` of the node cache, so every pod of
the model on that node shares one copy. Integrity: the manifest's own digest is computed
from its bytes (and must equal the reference's `@sha256:` when it has one, and the
registry's Docker-Content-Digest), and every file is checked against its layer digest and
size before the folder is renamed into place. Every request is checked
(runtime.adapters.transport, under `WeightsSettings.net`); an artifact larger than
`WeightsSettings.max_oci_bytes` (env KAITO_OCI_MAX_BYTES) is refused before any download,
and no file may carry more bytes than its manifest says.

The artifact is the adapter layout of runtime.adapters.oci with kind `model`: one layer per
file, its name in `org.opencontainers.image.title`. This module must not write outside the
cache, keep a folder whose files were not all checked, or log a secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from runtime import netcheck
from runtime.adapters import oci, transport
from runtime.jobstep import PullDenied, RegistryError
from runtime.weights.cache import (
    Progress,
    key_for,
    model_lock,
    read_complete,
    write_complete,
    write_json,
)
from runtime.weights.errors import WeightsError
from runtime.weights.settings import WeightsSettings

SCHEME = "oci://"
KIND = "model"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def strip_scheme(reference: str) -> str:
    return reference[len(SCHEME) :] if reference.startswith(SCHEME) else reference


def _pointer(settings: WeightsSettings, reference: str) -> Path:
    return settings.cache / "oci" / "refs" / (key_for("ref", reference) + ".json")


def _digest_key(digest: str) -> str:
    return key_for("oci", digest)


def local_artifact(reference: str, settings: WeightsSettings) -> Path | None:
    """The cached folder of `reference` (pulled earlier on this node), or None."""
    ref = strip_scheme(reference)
    _, at, pinned = ref.partition("@")
    digest = pinned if at else None
    if digest is None:
        try:
            digest = str(json.loads(_pointer(settings, ref).read_text())["digest"])
        except (OSError, ValueError, KeyError):
            return None
    return read_complete(settings.cache, _digest_key(digest))


def pull_model(reference: str, settings: WeightsSettings, log: logging.Logger,
               resolver: netcheck.Resolver = netcheck.system_resolver) -> tuple[Path, bool]:
    """Resolve `reference`, pull its files unless this node has them; (folder, pulled now)."""
    ref = strip_scheme(reference)
    if settings.offline:
        local = local_artifact(ref, settings)
        if local is None:
            raise WeightsError(
                f"{ref}: offline (KAITO_WEIGHTS_OFFLINE=1) and not in the node cache")
        return local, False
    host = oci.registry_host(ref)
    credentials = (oci.credentials_from_dockerconfig(settings.pull_secret, host)
                   if settings.pull_secret is not None else None)
    client = oci.open_registry(host, credentials, plain_http=settings.plain_http,
                               denied=PullDenied, policy=settings.net, resolver=resolver)
    digest, manifest = _manifest(client, ref, host)
    write_json(_pointer(settings, ref), {"reference": ref, "digest": digest})
    key = _digest_key(digest)
    local = read_complete(settings.cache, key)
    if local is not None:
        log.info("weights: %s (%s): in the node cache at %s, no download", ref, digest, local)
        return local, False
    with model_lock(settings.cache, key, log):
        local = read_complete(settings.cache, key)
        if local is not None:
            log.info("weights: %s: pulled by another process, no download", ref)
            return local, False
        return _pull_layers(client, ref, digest, manifest, settings, key, log), True


def _manifest(client: Any, ref: str, host: str) -> tuple[str, dict[str, Any]]:
    """The manifest's digest (computed from its bytes, checked) and its JSON."""
    container = client.get_container(ref)
    url = f"{client.prefix}://{container.manifest_url()}"
    try:  # read whole, so at most transport.MAX_BODY (4 MiB) bytes
        response = client.do_request(url, "GET", headers={"Accept": ", ".join(MANIFEST_TYPES)})
    except transport.Stop as exc:
        raise RegistryError(str(exc)) from exc
    except requests.RequestException as exc:
        raise RegistryError(f"pull from {host} failed: {exc}") from exc
    if response.status_code in (401, 403):
        raise PullDenied(f"{oci.registry_error_text(response)} (HTTP {response.status_code} "
                         f"from {host})")
    if response.status_code != 200:
        raise RegistryError(f"{ref}: the registry answered HTTP {response.status_code}: "
                            f"{oci.registry_error_text(response)}")
    raw: bytes = response.content
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    _, at, pinned = ref.partition("@")
    if at and pinned != digest:
        raise RegistryError(f"{ref}: the manifest's digest is {digest}, not the one named")
    announced = response.headers.get("Docker-Content-Digest")
    if announced and announced != digest:
        raise RegistryError(f"{ref}: the manifest's digest {digest} differs from the "
                            f"registry's {announced}")
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(f"{ref}: the manifest is not JSON") from exc
    if not isinstance(manifest, dict):
        raise RegistryError(f"{ref}: the manifest is not a JSON object")
    return digest, manifest


def _pull_layers(client: Any, ref: str, digest: str, manifest: dict[str, Any],
                 settings: WeightsSettings, key: str, log: logging.Logger) -> Path:
    layers = oci.checked_layers(manifest, ref, settings.max_oci_bytes)
    total = sum(int(layer.get("size", 0)) for _, layer in layers)
    root = settings.cache / "oci"
    root.mkdir(parents=True, exist_ok=True)
    final = root / digest.replace(":", "-")
    work = Path(tempfile.mkdtemp(prefix=".pull-", dir=root))
    started = time.monotonic()
    log.info("weights: %s: pulling %d files (%d bytes) from %s", ref, len(layers), total,
             oci.registry_host(ref))
    try:
        with Progress(settings.cache, key, work, total, log):
            oci.download_layers(client, ref, layers, work)
        if not (work / "config.json").is_file():
            raise WeightsError(f"{ref}: the artifact has no config.json; not a model folder")
        if final.exists():
            shutil.rmtree(final)  # a leftover without completion record: never trusted
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work)
    write_complete(settings.cache, key, {"path": str(final), "source": "oci", "reference": ref,
                                         "digest": digest, "bytes": total,
                                         "seconds": round(time.monotonic() - started, 2)})
    log.info("weights: %s: %d files checked against their digests, in %s (%.1f s)", ref,
             len(layers), final, time.monotonic() - started)
    return final


def push_model(folder: Path, reference: str, *, credentials: oci.Credentials | None,
               plain_http: bool, policy: netcheck.Policy = oci.STRICT) -> str:
    """Push a model folder's flat files as one artifact of kind `model`; its digest."""
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder}: no config.json; push a model folder")
    files = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    staging = Path(tempfile.mkdtemp(prefix="kaito-model-push-"))
    try:
        for path in files:  # symlinks (Hub cache snapshots) become plain files: link, not copy
            source = path.resolve()
            if not source.is_file():
                raise WeightsError(f"{path}: only flat files can be pushed (found a folder)")
            target = staging / path.name
            try:
                target.hardlink_to(source)
            except OSError:
                shutil.copyfile(source, target)
        return oci.push_directory(staging, strip_scheme(reference), kind=KIND,
                                  credentials=credentials, plain_http=plain_http,
                                  policy=policy)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
