"""The rig's image registry: our images pushed where the real nodes' kubelets pull them.

Why: real nodes run the images the project builds (rig.images), and nothing can be pulled
from a public registry here. One Debian `docker-registry` per state dir listens on a free
127.0.0.1 port (Docker treats loopback registries as insecure by default, so no daemon
flag and no TLS are needed), without auth, its data under STATE/registry. `publish`
tags each built image as 127.0.0.1:PORT/kaito-py/NAME:TAG in the image-build engine,
pushes it (unchanged layers are skipped by the registry, so a warm push is seconds) and
drops that tag again.

It must not: listen on anything but loopback, push anywhere but this registry, touch a
registry process it did not start (pid and command line must both match), or hide a
failed start or push (the error carries the log's tail or docker's output).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig import procs

REGISTRY_BIN = "/usr/bin/docker-registry"
PATH_PREFIX = "kaito-py"


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
    """A loopback registry owned by one state dir (STATE/registry)."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir).resolve() / "registry"
        self.record_file = self.root / "registry.json"
        self.log = self.root / "registry.log"

    def _record(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.record_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    @property
    def host(self) -> str:
        rec = self._record()
        if not rec:
            raise RegistryError(f"no registry recorded in {self.root}: start it first")
        return f"127.0.0.1:{rec['port']}"

    def running(self) -> bool:
        rec = self._record()
        if not rec or not procs.is_ours(int(rec.get("pid", 0)), REGISTRY_BIN, str(self.root)):
            return False
        return _answers(f"http://127.0.0.1:{rec['port']}/v2/")

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
        config = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
                  "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                              "delete": {"enabled": True}},
                  "http": {"addr": f"127.0.0.1:{port}"}}
        conf = self.root / "config.yml"
        conf.write_text(json.dumps(config))  # JSON is YAML
        pid = procs.start([REGISTRY_BIN, "serve", str(conf)], self.log)
        self.record_file.write_text(json.dumps({"pid": pid, "port": port}))
        deadline = time.monotonic() + timeout
        while not _answers(f"http://127.0.0.1:{port}/v2/"):
            if not procs.is_ours(pid, REGISTRY_BIN, str(self.root)):
                raise RegistryError(f"docker-registry exited at start; {self.log}:\n"
                                    f"{procs.tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RegistryError(f"docker-registry did not answer on 127.0.0.1:{port} "
                                    f"within {timeout:.0f}s; {self.log}:\n{procs.tail(self.log)}")
            time.sleep(0.2)
        return f"127.0.0.1:{port}"

    def stop(self, *, remove: bool = False) -> list[str]:
        """Stop our registry (remove: also its data). Returns what was done."""
        done = []
        rec = self._record()
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


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback)
            return bool(resp.status == 200)
    except OSError:
        return False


def publish(engine: Any, host: str, names: Sequence[str],
            say: Callable[[str], None] = print) -> list[Published]:
    """Tag each built image as HOST/kaito-py/NAME:TAG in `engine` and push it there.

    engine: a rig.images.dockerd.Engine (the image-build dockerd). Layers the registry
    already holds are not sent again.
    """
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
    return out
