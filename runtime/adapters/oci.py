"""Adapters and data sets as OCI artifacts: push a directory to a registry, pull it back.

Why: `tuning.output.image` stores the trained adapter in a registry, `tuning.input.image`
holds data, and an inference Workspace's `adapters[].source.image` names an adapter to
serve. All three move flat directories of files with the `oras` library.

Artifact layout (what the inference side pulls and mounts):
- manifest: `application/vnd.oci.image.manifest.v1+json`, annotation
  `sh.kaito.artifact` = `adapter` | `dataset` | `model` (model weights: runtime.weights);
- config: media type `application/vnd.kaito.adapter.config.v1+json` (or
  `...dataset.config.v1+json`), a JSON object `{"kind": ..., "files": [names]}`;
- one layer per file, media type `application/vnd.kaito.adapter.file.v1` (or
  `...dataset.file.v1`), its file name in `org.opencontainers.image.title`.
Pulling writes each layer to `DEST/<title>`: an adapter pulls to
`DEST/adapter_config.json` + `DEST/adapter_model.safetensors`, which is exactly what
`PeftModel.from_pretrained(DEST)` reads. Pull accepts any layer media type (data pushed
with the oras CLI works) but only plain file names, and checks every digest and size.

Credentials come from a `kubernetes.io/dockerconfigjson` Secret mounted as a file
(`auths` -> host -> `auth` (base64 user:password) or `username`/`password`). The auth
scheme is read from the registry's own `/v2/` challenge: `Basic` registries need oras's
basic backend (its token backend mistakes a Basic realm for a token server), and for them
the credentials are checked first so a wrong password fails at once with the registry's
own error text. The command line (`kaito-oci pull|push`) is runtime.adapters.
This module must not log secrets or write outside DEST.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from runtime.jobstep import PullDenied, PushDenied, RegistryError, TuneError

LOG = logging.getLogger("kaito.tune.oci")
KINDS = ("adapter", "dataset", "model")
TITLE = "org.opencontainers.image.title"
KIND_ANNOTATION = "sh.kaito.artifact"
TIMEOUT = 30.0


def config_media_type(kind: str) -> str:
    return f"application/vnd.kaito.{kind}.config.v1+json"


def file_media_type(kind: str) -> str:
    return f"application/vnd.kaito.{kind}.file.v1"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def registry_host(reference: str) -> str:
    """The registry host[:port] of an image reference (`host/repo:tag`)."""
    first = reference.split("/", 1)[0]
    if "/" not in reference or not ("." in first or ":" in first or first == "localhost"):
        return "docker.io"
    return first


def _host_key(key: str) -> str:
    key = key.split("://", 1)[-1]
    return key.split("/", 1)[0].lower()


def credentials_from_dockerconfig(path: Path, host: str) -> Credentials:
    """The credentials for `host` in a dockerconfigjson (or legacy dockercfg) file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"cannot read registry secret {path}: {exc}") from exc
    auths = data.get("auths", data) if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        raise RegistryError(f"registry secret {path} has no 'auths' mapping")
    entries = {_host_key(str(k)): v for k, v in auths.items()}
    entry = entries.get(host.lower())
    if not isinstance(entry, dict):
        known = ", ".join(sorted(entries)) or "none"
        raise RegistryError(f"registry secret has no credentials for {host}; it has: {known}")
    if entry.get("username"):
        return Credentials(str(entry["username"]), str(entry.get("password", "")))
    try:
        user, _, password = base64.b64decode(str(entry.get("auth", ""))).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise RegistryError(f"registry secret entry for {host}: 'auth' is not base64") from exc
    if not user:
        raise RegistryError(f"registry secret entry for {host} has neither auth nor username")
    return Credentials(user, password)


def registry_error_text(response: requests.Response) -> str:
    """The registry's own error text: `CODE: message` of each error, else the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        parts = [
            f"{e.get('code', '?')}: {e.get('message', '')}".strip()
            for e in errors
            if isinstance(e, dict)
        ]
        if parts:
            return "; ".join(parts)
    return (response.text or response.reason or "").strip()[:300]


def auth_backend(
    host: str, credentials: Credentials | None, *, plain_http: bool, denied: type[TuneError]
) -> str:
    """'basic' or 'token', from the registry's `/v2/` challenge; checks basic credentials."""
    url = f"{'http' if plain_http else 'https'}://{host}/v2/"
    try:
        anonymous = requests.get(url, timeout=TIMEOUT)
        challenge = anonymous.headers.get("WWW-Authenticate", "")
        if anonymous.status_code != 401 or not challenge.lower().startswith("basic"):
            return "token"
        if credentials is None:
            raise denied(f"{registry_error_text(anonymous)} (HTTP 401 from {host}; no credentials)")
        auth = (credentials.username, credentials.password)
        checked = requests.get(url, auth=auth, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise RegistryError(f"cannot reach registry {host}: {exc}") from exc
    if checked.status_code in (401, 403):
        raise denied(f"{registry_error_text(checked)} (HTTP {checked.status_code} from {host})")
    return "basic"


def registry_client(host: str, credentials: Credentials | None, plain_http: bool,
                    backend: str) -> Any:
    """An oras client for one registry, logged in when credentials are given."""
    from oras.client import OrasClient

    client = OrasClient(hostname=host, insecure=plain_http, auth_backend=backend)
    if credentials is not None:
        client.auth.set_basic_auth(credentials.username, credentials.password)
    return client


def _flat_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise TuneError(f"{directory} is not a directory")
    entries = sorted(directory.iterdir())
    nested = [p.name for p in entries if not p.is_file()]
    if nested:
        raise TuneError(f"{directory} holds non-files ({', '.join(nested)}); push flat files only")
    if not entries:
        raise TuneError(f"{directory} is empty: nothing to push")
    bad = [p.name for p in entries if ":" in str(p)]
    if bad:
        raise TuneError(f"file paths must not contain ':' ({', '.join(bad)})")
    return entries


def push_directory(
    directory: Path,
    reference: str,
    *,
    kind: str = "adapter",
    credentials: Credentials | None = None,
    plain_http: bool = False,
) -> str:
    """Push every file of `directory` as one artifact; return the manifest digest."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    files = _flat_files(directory)
    host = registry_host(reference)
    backend = auth_backend(host, credentials, plain_http=plain_http, denied=PushDenied)
    client = registry_client(host, credentials, plain_http, backend)
    with tempfile.TemporaryDirectory(prefix="kaito-oci-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"kind": kind, "files": [p.name for p in files]}))
        try:
            response = client.push(
                target=reference,
                files=[f"{p}:{file_media_type(kind)}" for p in files],
                manifest_config=f"{config}:{config_media_type(kind)}",
                manifest_annotations={KIND_ANNOTATION: kind},
                disable_path_validation=True,
                quiet=True,
            )
        except ValueError as exc:
            raise _classify(exc, host, PushDenied) from exc
        except requests.RequestException as exc:
            raise RegistryError(f"push to {host} failed: {exc}") from exc
    digest = str(response.headers.get("Docker-Content-Digest", ""))
    LOG.info("pushed %d files to %s (%s)", len(files), reference, digest or "no digest")
    return digest


def _classify(exc: Exception, host: str, denied: type[TuneError]) -> TuneError:
    text = str(exc)
    if any(word in text for word in ("Unauthorized", "Forbidden", "authentication", "denied")):
        return denied(f"{text} (registry {host})")
    return RegistryError(f"registry {host}: {text}")


def pull_directory(
    reference: str,
    dest: Path,
    *,
    credentials: Credentials | None = None,
    plain_http: bool = False,
    max_bytes: int = 1 << 30,
) -> list[Path]:
    """Pull an artifact's files into `dest`; checks names, total size, every digest."""
    host = registry_host(reference)
    backend = auth_backend(host, credentials, plain_http=plain_http, denied=PullDenied)
    client = registry_client(host, credentials, plain_http, backend)
    try:
        manifest = client.get_manifest(reference)
    except ValueError as exc:
        raise _classify(exc, host, PullDenied) from exc
    except requests.RequestException as exc:
        raise RegistryError(f"pull from {host} failed: {exc}") from exc
    layers = checked_layers(manifest, reference, max_bytes)
    dest.mkdir(parents=True, exist_ok=True)
    out = download_layers(client, reference, layers, dest)
    LOG.info("pulled %d files from %s into %s", len(out), reference, dest)
    return out


def download_layers(
    client: Any, reference: str, layers: list[tuple[str, dict[str, Any]]], dest: Path
) -> list[Path]:
    """Download each checked layer (`checked_layers`) into `dest`/name and verify its digest
    and size (a bad file is removed); RegistryError names the file that failed."""
    out: list[Path] = []
    for name, layer in layers:
        target = dest / name
        try:
            client.download_blob(reference, layer["digest"], str(target))
        except (ValueError, requests.RequestException) as exc:
            raise RegistryError(f"downloading {name} from {reference} failed: {exc}") from exc
        _verify(target, layer)
        out.append(target)
    return out


def checked_layers(
    manifest: Mapping[str, Any], reference: str, max_bytes: int
) -> list[tuple[str, dict[str, Any]]]:
    """The manifest's layers as (file name, descriptor), refused when unsafe or over max_bytes."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise RegistryError(f"{reference}: the manifest has no layers (is it an image index?)")
    out: list[tuple[str, dict[str, Any]]] = []
    for layer in layers:
        name = str((layer.get("annotations") or {}).get(TITLE, ""))
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise RegistryError(f"{reference}: layer title {name!r} is not a plain file name")
        if str(layer.get("mediaType", "")).endswith("tar+gzip"):
            raise RegistryError(f"{reference}: layer {name!r} is a directory archive; push files")
        out.append((name, layer))
    total = sum(int(layer.get("size", 0)) for _, layer in out)
    if total > max_bytes:
        raise RegistryError(f"{reference} is {total} bytes, over the limit of {max_bytes} bytes")
    return out


def _verify(path: Path, layer: Mapping[str, Any]) -> None:
    algorithm, _, expected = str(layer.get("digest", "")).partition(":")
    if algorithm != "sha256":
        raise RegistryError(f"{path.name}: unsupported digest {layer.get('digest')!r}")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    size = path.stat().st_size
    if digest.hexdigest() != expected or size != int(layer.get("size", -1)):
        path.unlink(missing_ok=True)
        raise RegistryError(f"{path.name}: content does not match its digest or size")
