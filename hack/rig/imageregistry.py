"""The rig's image registry: our images pushed where the real nodes' kubelets pull them.

Why: real nodes run the images the project builds (rig.images), and nothing can be pulled
from a public registry here. One Debian `docker-registry` per state dir listens on a free
127.0.0.1 port (Docker treats loopback registries as insecure by default, so no daemon
flag and no TLS are needed), without auth, its data under STATE/registry. `publish`
tags each built image as 127.0.0.1:PORT/kaito-py/NAME:TAG in the image-build engine,
pushes it (unchanged layers are skipped by the registry, so a warm push is seconds) and
drops that tag again. Each state dir's registry starts empty, so the first push would send
every layer (GBs, a minute per runtime image): `publish` first links into it the layers
the last publish on this machine kept (SEED_DIR, blobs hard-linked, outside the repo), then
keeps the layers of what it pushed, and only those, for the next one.

Pods cannot reach the host's loopback from their own network namespace, yet a tuning Job
pushes its adapter and an inference pod's init container pulls one (and base weights, as
a model artifact). `start_pod_side(ADDRESS)` starts a second `docker-registry` on the same
storage, listening on ADDRESS:PORT2, where ADDRESS is one the rig made itself (the control
plane's bridge address, which pods reach as local delivery; rig.hostnet), with htpasswd
basic auth (bcrypt, `htpasswd -B` of apache2-utils; a random password kept in
STATE/registry, mode 0600) and plain HTTP. What one side stores, the other serves: the
loopback side stays open for the nodes' dockerds and the host, the pod side asks for the
credentials `docker_config()` gives (a kubernetes.io/dockerconfigjson payload).

It must not: listen on anything but loopback and the one address given to
start_pod_side, push anywhere but this registry, touch a registry process it did not
start (pid and command line must both match), or hide a failed start or push (the error
carries the log's tail or docker's output).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig import procs
from rig.k8sbuild import cache_root

REGISTRY_BIN = "/usr/bin/docker-registry"
HTPASSWD_BIN = "/usr/bin/htpasswd"
PATH_PREFIX = "kaito-py"
POD_USER = "kaito"
# Layers of the images the last publish pushed: blobs/<algo>/<hex> (hard links of the
# registry's own blob files, which it never rewrites) and repos/<repository>.json (the
# digests each repository's last pushed image is made of). Content-addressed: a stale
# entry only means a layer is sent again; docker verifies every digest it pulls.
SEED_DIR = cache_root() / "registry-seed" / "v2"


class RegistryError(RuntimeError):
    """The registry could not start, or an image could not be pushed to it."""


@dataclass(frozen=True, slots=True)
class Published:
    """One image in the registry: the name manifests and the catalog use, and where it is."""

    name: str  # ghcr.io/kaito-py/cpu-runtime:0.1.0
    local: str  # 127.0.0.1:PORT/kaito-py/cpu-runtime:0.1.0
    seconds: float


def local_name(host: str, name: str) -> str:
    """ghcr.io/kaito-py/cpu-runtime:0.1.0 -> HOST/kaito-py/cpu-runtime:0.1.0."""
    repo_tag = name.rsplit("/", 1)[-1]
    return f"{host}/{PATH_PREFIX}/{repo_tag}"


class ImageRegistry:
    """A loopback registry owned by one state dir (STATE/registry), and its pod side."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir).resolve() / "registry"
        self.record_file = self.root / "registry.json"
        self.log = self.root / "registry.log"
        self.pod_log = self.root / "registry-pods.log"

    def _record(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.record_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def _write_record(self, rec: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.record_file.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(rec))  # holds the pod side's password: root only
        tmp.rename(self.record_file)

    @property
    def host(self) -> str:
        rec = self._record()
        if not rec:
            raise RegistryError(f"no registry recorded in {self.root}: start it first")
        return f"127.0.0.1:{rec['port']}"

    @property
    def pod_host(self) -> str:
        """ADDRESS:PORT2 of the pod side (start_pod_side), where pods push and pull."""
        pod = self._record().get("pod")
        if not pod:
            raise RegistryError(f"no pod side recorded in {self.root}: start_pod_side first")
        return f"{pod['address']}:{pod['port']}"

    def running(self) -> bool:
        rec = self._record()
        if not rec or not procs.is_ours(int(rec.get("pid", 0)), REGISTRY_BIN, str(self.root)):
            return False
        return _answers(f"http://127.0.0.1:{rec['port']}/v2/")

    def pod_side_running(self) -> bool:
        pod = self._record().get("pod") or {}
        if not pod or not procs.is_ours(int(pod.get("pid", 0)), REGISTRY_BIN, str(self.root)):
            return False
        return _answers(f"http://{pod['address']}:{pod['port']}/v2/", want=401)

    def _config(self, name: str, addr: str, auth: dict[str, Any] | None) -> Path:
        config: dict[str, Any] = {
            "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": addr, "secret": secrets.token_hex(16)}}
        if auth:
            config["auth"] = auth
        conf = self.root / name
        conf.touch(mode=0o600)
        conf.write_text(json.dumps(config))  # JSON is YAML
        return conf

    def _serve(self, conf: Path, log: Path, url: str, want: int, timeout: float) -> int:
        pid = procs.start([REGISTRY_BIN, "serve", str(conf)], log)
        deadline = time.monotonic() + timeout
        while not _answers(url, want=want):
            if not procs.is_ours(pid, REGISTRY_BIN, str(self.root)):
                raise RegistryError(f"docker-registry exited at start; {log}:\n"
                                    f"{procs.tail(log)}")
            if time.monotonic() > deadline:
                procs.stop(pid, REGISTRY_BIN, str(self.root))
                raise RegistryError(f"docker-registry did not answer {url} within "
                                    f"{timeout:.0f}s; {log}:\n{procs.tail(log)}")
            time.sleep(0.2)
        return pid

    def start(self, *, timeout: float = 30.0) -> str:
        """Start the registry unless it runs; return its host (127.0.0.1:PORT)."""
        if self.running():
            return self.host
        if not Path(REGISTRY_BIN).exists():
            raise RegistryError(f"{REGISTRY_BIN} is missing: apt-get install docker-registry")
        self.stop()
        rec = self._record()
        port = int(rec.get("port") or procs.free_port())  # the same port again when possible
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self._config("config.yml", f"127.0.0.1:{port}", None)
        pid = self._serve(conf, self.log, f"http://127.0.0.1:{port}/v2/", 200, timeout)
        self._write_record({"pid": pid, "port": port})
        return f"127.0.0.1:{port}"

    def start_pod_side(self, address: str, *, timeout: float = 30.0) -> str:
        """Serve the same storage on ADDRESS:PORT2 with basic auth; return ADDRESS:PORT2.

        ADDRESS must be one the rig made (the control plane's bridge address): pods reach
        it, nothing outside this machine does. The loopback side must run first.
        """
        if not self.running():
            raise RegistryError("start the loopback registry before its pod side")
        rec = self._record()
        pod = dict(rec.get("pod") or {})
        if pod.get("address") == address and self.pod_side_running():
            return self.pod_host
        if not Path(HTPASSWD_BIN).exists():
            raise RegistryError(f"{HTPASSWD_BIN} is missing: apt-get install apache2-utils")
        self._stop_pod_side(pod)
        password = str(pod.get("password") or secrets.token_urlsafe(18))
        made = subprocess.run([HTPASSWD_BIN, "-Bbn", POD_USER, password], capture_output=True,
                              text=True, timeout=30, check=False)
        if made.returncode != 0:
            raise RegistryError(f"htpasswd failed: {made.stderr.strip()}")
        htpasswd = self.root / "htpasswd"
        htpasswd.touch(mode=0o600)
        htpasswd.write_text(made.stdout)
        port = int(pod.get("port") or 0) if pod.get("address") == address else 0
        port = port or procs.free_port()
        conf = self._config("config-pods.yml", f"{address}:{port}",
                            {"htpasswd": {"realm": "kaito-rig", "path": str(htpasswd)}})
        pid = self._serve(conf, self.pod_log, f"http://{address}:{port}/v2/", 401, timeout)
        rec["pod"] = {"pid": pid, "address": address, "port": port, "username": POD_USER,
                      "password": password}
        self._write_record(rec)
        return f"{address}:{port}"

    def credentials(self) -> tuple[str, str]:
        """The pod side's (username, password)."""
        pod = self._record().get("pod")
        if not pod:
            raise RegistryError(f"no pod side recorded in {self.root}: start_pod_side first")
        return str(pod["username"]), str(pod["password"])

    def docker_config(self) -> dict[str, Any]:
        """A kubernetes.io/dockerconfigjson payload for the pod side (for imagePushSecret)."""
        user, password = self.credentials()
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"auths": {self.pod_host: {"auth": auth}}}

    def _stop_pod_side(self, pod: dict[str, Any]) -> bool:
        return procs.stop(int(pod.get("pid", 0)), REGISTRY_BIN, str(self.root))

    def stop(self, *, remove: bool = False) -> list[str]:
        """Stop our registry and its pod side (remove: also its data). What was done."""
        done = []
        rec = self._record()
        pod = dict(rec.get("pod") or {})
        if self._stop_pod_side(pod):
            done.append(f"image registry pod side on {pod['address']} (pid {pod['pid']})")
        pid = int(rec.get("pid", 0))
        if procs.stop(pid, REGISTRY_BIN, str(self.root)):
            done.append(f"image registry (pid {pid})")
        if remove and self.root.exists():
            shutil.rmtree(self.root)
            done.append(f"image registry data {self.root}")
        return done

    def tags(self, repository: str) -> list[str]:
        try:
            with urllib.request.urlopen(
                    f"http://{self.host}/v2/{repository}/tags/list", timeout=10) as resp:
                return list(json.loads(resp.read()).get("tags") or [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise

    def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]]:
        """(digest, manifest) of REPOSITORY:REFERENCE, read on the loopback side."""
        req = urllib.request.Request(
            f"http://{self.host}/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
            raw = resp.read()
        return f"sha256:{hashlib.sha256(raw).hexdigest()}", dict(json.loads(raw))


    def blob(self, repository: str, digest: str) -> bytes:
        """One blob of REPOSITORY, read on the loopback side."""
        url = f"http://{self.host}/v2/{repository}/blobs/{digest}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return bytes(resp.read())


MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")


def _answers(url: str, want: int = 200) -> bool:
    """True when URL answers HTTP `want` (200 open, 401 asking for basic auth)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (our own addresses)
            return bool(resp.status == want)
    except urllib.error.HTTPError as exc:
        return exc.code == want
    except OSError:
        return False


def publish(engine: Any, registry: ImageRegistry, names: Sequence[str],
            say: Callable[[str], None] = print) -> list[Published]:
    """Tag each built image as HOST/kaito-py/NAME:TAG in `engine` and push it to `registry`.

    engine: a rig.images.dockerd.Engine (the image-build dockerd). Layers the registry
    already holds, or that the last publish kept (SEED_DIR), are not sent again.
    """
    host = registry.host
    try:
        seeded = _seed(registry.root / "data", names)
    except OSError as exc:  # the seed only saves time: without it every layer is pushed
        seeded = 0
        say(f"the layers kept in {SEED_DIR} could not be linked ({exc}): pushing them all")
    if seeded:
        say(f"linked {seeded} layer(s) the last publish kept into the registry")
    out = []
    for name in names:
        started = time.monotonic()
        target = local_name(host, name)
        try:
            engine.run("tag", name, target)
            engine.run("push", target, timeout=3600)
            engine.run("rmi", target)  # only the tag: the engine keeps no registry names
        except RuntimeError as exc:
            raise RegistryError(f"could not push {name} to {host}: {exc}") from exc
        seconds = time.monotonic() - started
        say(f"pushed {target} ({seconds:.0f}s)")
        out.append(Published(name, target, seconds))
    try:
        _keep_seed(registry, out)
    except (OSError, ValueError, KeyError) as exc:
        say(f"the pushed layers could not be kept in {SEED_DIR} for the next publish: {exc}")
    return out


def _repository(name: str) -> str:
    """ghcr.io/kaito-py/cpu-runtime:0.1.0 -> kaito-py/cpu-runtime."""
    return local_name("", name).lstrip("/").rsplit(":", 1)[0]


def _blob_path(root: Path, digest: str) -> Path:
    algo, hexdigest = digest.split(":", 1)
    return root / algo / hexdigest[:2] / hexdigest / "data"


def _link(src: Path, dst: Path) -> None:
    """dst becomes a hard link of src (a copy across file systems), written atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}")
    try:
        os.link(src, tmp)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(src, tmp)
    tmp.replace(dst)


def _seed(data: Path, names: Sequence[str]) -> int:
    """Link the kept layers of `names`' repositories into registry storage `data`, as the
    registry's filesystem driver lays out a pushed blob and a repository's link to it.
    Returns how many were linked; a layer the seed lost is simply pushed."""
    v2 = data / "docker" / "registry" / "v2"
    linked = 0
    for name in names:
        repository = _repository(name)
        try:
            digests = json.loads((SEED_DIR / "repos" / f"{repository}.json").read_text())
        except (FileNotFoundError, ValueError):
            continue
        for digest in digests:
            target = _blob_path(v2 / "blobs", digest)
            try:
                if not target.exists():
                    _link(_blob_path(SEED_DIR / "blobs", digest), target)
            except FileNotFoundError:
                continue  # pruned by a later publish: this layer is pushed
            algo, hexdigest = digest.split(":", 1)
            link = v2 / "repositories" / repository / "_layers" / algo / hexdigest / "link"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.write_text(digest)
            linked += 1
    return linked


def _keep_seed(registry: ImageRegistry, published: Sequence[Published]) -> None:
    """Keep the config and layers of each pushed image for the next publish; drop kept
    blobs no repository names any more (the seed holds one version of each image)."""
    blobs = registry.root / "data" / "docker" / "registry" / "v2" / "blobs"
    for p in published:
        repository = _repository(p.name)
        _, manifest = registry.manifest(repository, p.name.rsplit(":", 1)[1])
        digests = [manifest["config"]["digest"], *(la["digest"] for la in manifest["layers"])]
        for digest in digests:
            kept = _blob_path(SEED_DIR / "blobs", digest)
            if not kept.exists():
                _link(_blob_path(blobs, digest), kept)
        record = SEED_DIR / "repos" / f"{repository}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.tmp")
        tmp.write_text(json.dumps(digests))
        tmp.replace(record)
    named = {d for r in (SEED_DIR / "repos").rglob("*.json") for d in json.loads(r.read_text())}
    for data in (SEED_DIR / "blobs").glob("*/*/*/data"):
        if f"{data.parent.parent.parent.name}:{data.parent.name}" not in named:
            shutil.rmtree(data.parent)
