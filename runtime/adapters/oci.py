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

Every request (the `/v2/` probe, token endpoint, manifest, blob, upload, and each redirect
hop) goes through runtime.adapters.transport: its host is checked by runtime.netcheck under
the caller's `Policy` (no loopback, link-local, metadata or private targets unless allowed)
before any connection. Bytes are bounded by what is actually received: a manifest or any
answer read whole by 4 MiB, a layer by its manifest size (the sum of which must be within
`max_bytes`); a layer that sends more is refused and its partial file removed.
This module must not log secrets or write outside DEST.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from runtime import netcheck
from runtime.adapters import transport
from runtime.jobstep import PullDenied, PushDenied, RegistryError, TuneError

LOG = logging.getLogger("kaito.tune.oci")
KINDS = ("adapter", "dataset", "model")
TITLE = "org.opencontainers.image.title"
KIND_ANNOTATION = "sh.kaito.artifact"
TIMEOUT = 30.0
CHUNK = 1 << 20
STRICT = netcheck.STRICT  # public registries only


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
    host: str, credentials: Credentials | None, *, plain_http: bool, denied: type[TuneError],
    session: requests.Session,
) -> str:
    """'basic' or 'token', from the registry's `/v2/` challenge; checks basic credentials."""
    url = f"{'http' if plain_http else 'https'}://{host}/v2/"
    with _errors(host, denied, "cannot reach registry"):
        anonymous = session.get(url, timeout=TIMEOUT)
        challenge = anonymous.headers.get("WWW-Authenticate", "")
        if anonymous.status_code != 401 or not challenge.lower().startswith("basic"):
            return "token"
        if credentials is None:
            raise denied(f"{registry_error_text(anonymous)} (HTTP 401 from {host}; no credentials)")
        auth = (credentials.username, credentials.password)
        checked = session.get(url, auth=auth, timeout=TIMEOUT)
    if checked.status_code in (401, 403):
        raise denied(f"{registry_error_text(checked)} (HTTP {checked.status_code} from {host})")
    return "basic"


def registry_client(host: str, credentials: Credentials | None, plain_http: bool,
                    backend: str, *, policy: netcheck.Policy = STRICT,
                    resolver: netcheck.Resolver = netcheck.system_resolver) -> Any:
    """An oras client for one registry whose every request is checked (transport)."""
    from oras.client import OrasClient

    client = OrasClient(hostname=host, insecure=plain_http, auth_backend=backend)
    transport.checked_session(client.session, host, policy, resolver)
    if credentials is not None:
        client.auth.set_basic_auth(credentials.username, credentials.password)
    return client


def open_registry(host: str, credentials: Credentials | None, *, plain_http: bool,
                  denied: type[TuneError], policy: netcheck.Policy = STRICT,
                  resolver: netcheck.Resolver = netcheck.system_resolver) -> Any:
    """Check the registry's host, read its auth scheme, return a checked oras client.

    The host is checked before anything is sent, so a refused registry sees no request."""
    with _errors(host, denied, "cannot reach registry"):
        name, port = _split_host(host, plain_http)
        try:
            netcheck.check_host(name, port, policy, resolver)
        except netcheck.Refused as exc:
            raise transport.TargetRefused(host, host, exc) from exc
        except netcheck.Unresolved as exc:
            raise RegistryError(f"cannot reach registry {host}: {exc}") from exc
    probe = transport.checked_session(requests.Session(), host, policy, resolver)
    try:
        backend = auth_backend(host, credentials, plain_http=plain_http, denied=denied,
                               session=probe)
    finally:
        probe.close()
    return registry_client(host, credentials, plain_http, backend, policy=policy,
                           resolver=resolver)


def _split_host(host: str, plain_http: bool) -> tuple[str, int]:
    parts = urlsplit(f"//{host}")
    try:
        port = parts.port
    except ValueError as exc:
        raise RegistryError(f"registry {host!r}: not a host[:port]") from exc
    if not parts.hostname:
        raise RegistryError(f"registry {host!r}: not a host[:port]")
    return parts.hostname, port or (80 if plain_http else 443)


@contextlib.contextmanager
def _errors(host: str, denied: type[TuneError], what: str) -> Iterator[None]:
    """The registry client's errors as this module's: refusals and limits, oras's
    ValueErrors (denied or not), and requests' connection errors."""
    try:
        yield
    except transport.Stop as exc:
        raise RegistryError(str(exc)) from exc
    except TuneError:
        raise
    except requests.RequestException as exc:
        raise RegistryError(f"{what} {host}: {exc}") from exc
    except ValueError as exc:
        raise _classify(exc, host, denied) from exc


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
    policy: netcheck.Policy = STRICT,
    resolver: netcheck.Resolver = netcheck.system_resolver,
) -> str:
    """Push every file of `directory` as one artifact; return the manifest digest."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    files = _flat_files(directory)
    host = registry_host(reference)
    client = open_registry(host, credentials, plain_http=plain_http, denied=PushDenied,
                           policy=policy, resolver=resolver)
    with tempfile.TemporaryDirectory(prefix="kaito-oci-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"kind": kind, "files": [p.name for p in files]}))
        with _errors(host, PushDenied, "push failed: registry"):
            response = client.push(
                target=reference,
                files=[f"{p}:{file_media_type(kind)}" for p in files],
                manifest_config=f"{config}:{config_media_type(kind)}",
                manifest_annotations={KIND_ANNOTATION: kind},
                disable_path_validation=True,
                quiet=True,
            )
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
    policy: netcheck.Policy = STRICT,
    resolver: netcheck.Resolver = netcheck.system_resolver,
) -> list[Path]:
    """Pull an artifact's files into `dest`; checks names, sizes, every digest."""
    host = registry_host(reference)
    client = open_registry(host, credentials, plain_http=plain_http, denied=PullDenied,
                           policy=policy, resolver=resolver)
    with _errors(host, PullDenied, "pull failed: registry"):
        manifest = client.get_manifest(reference)
    layers = checked_layers(manifest, reference, max_bytes)
    dest.mkdir(parents=True, exist_ok=True)
    out = download_layers(client, reference, layers, dest)
    LOG.info("pulled %d files from %s into %s", len(out), reference, dest)
    return out


def download_layers(
    client: Any, reference: str, layers: list[tuple[str, dict[str, Any]]], dest: Path
) -> list[Path]:
    """Download each checked layer (`checked_layers`) into `dest`/name, never more bytes
    than its manifest size, and verify its digest; a bad file is removed and RegistryError
    names it."""
    out: list[Path] = []
    host = registry_host(reference)
    for name, layer in layers:
        target = dest / name
        with _errors(host, PullDenied, f"downloading {name} failed: registry"):
            _download(client, reference, name, layer, target)
        out.append(target)
    return out


def _download(client: Any, reference: str, name: str, layer: Mapping[str, Any],
              target: Path) -> None:
    size = int(layer["size"])
    expected = str(layer["digest"]).partition(":")[2]
    response = client.get_blob(reference, layer["digest"], stream=True)
    try:
        if response.status_code != 200:
            transport.read_capped(response, transport.MAX_BODY, registry_host(reference))
            denied = response.status_code in (401, 403)
            raise (PullDenied if denied else RegistryError)(
                f"{reference}: {name}: the registry answered HTTP {response.status_code}: "
                f"{registry_error_text(response)}")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > size:
            raise RegistryError(f"{reference}: {name}: the registry announced {int(length)} "
                                f"bytes; the manifest says {size}")
        digest, total = hashlib.sha256(), 0
        with open(target, "wb") as fh:
            for chunk in response.iter_content(CHUNK):
                total += len(chunk)
                if total > size:
                    raise RegistryError(f"{reference}: {name}: the registry sent more than "
                                        f"the manifest's {size} bytes")
                digest.update(chunk)
                fh.write(chunk)
        if total != size or digest.hexdigest() != expected:
            raise RegistryError(f"{name}: content does not match its digest or size "
                                f"({total} of {size} bytes)")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        response.close()


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
        size = layer.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError(f"{reference}: layer {name!r} has no valid size ({size!r})")
        algorithm, _, hexdigest = str(layer.get("digest", "")).partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise RegistryError(f"{reference}: layer {name!r}: unsupported digest "
                                f"{layer.get('digest')!r}")
        out.append((name, layer))
    names = [name for name, _ in out]
    if len(set(names)) != len(names):
        raise RegistryError(f"{reference}: two layers have the same file name")
    total = sum(int(layer["size"]) for _, layer in out)
    if total > max_bytes:
        raise RegistryError(f"{reference} is {total} bytes, over the limit of {max_bytes} bytes")
    return out
