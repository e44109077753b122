"""A real OCI registry for tests: Debian's docker-registry on loopback with htpasswd auth.

Why: pushing and pulling adapters must be tested against a real registry that really
checks basic-auth credentials, so that imagePushSecret handling and the registry's own
error text are real. The fixture `oci_registry` (session scope) starts
`docker-registry serve` (Debian package docker-registry, 2.8.2) on a free 127.0.0.1 port
with a bcrypt htpasswd file made by `htpasswd -B` (package apache2-utils), waits until
`/v2/` answers 401, and stops it at the end. When it cannot start, the test FAILS with
the reason; it never skips. Test modules wrap `running_registry` in a fixture of their
own (or use `oci_registry` once this module is in the root conftest's `pytest_plugins`).

It must not bind anything but loopback, nor leave the process running.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

USERNAME = "kaito"
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LocalRegistry:
    host: str  # 127.0.0.1:PORT
    username: str
    password: str

    def reference(self, repository: str, tag: str = "v1") -> str:
        return f"{self.host}/{repository}:{tag}"

    def docker_config(self, path: Path, *, password: str | None = None) -> Path:
        """Write a kubernetes.io/dockerconfigjson payload for this registry to `path`."""
        secret = self.password if password is None else password
        auth = base64.b64encode(f"{self.username}:{secret}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run hack/bootstrap.sh (Debian packages)")
    return path


def _write_config(root: Path, port: int, htpasswd: Path) -> Path:
    # JSON is valid YAML, so the registry reads this without a YAML writer here.
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        "auth": {"htpasswd": {"realm": "kaito-test", "path": str(htpasswd)}},
    }
    path = root / "config.yml"
    path.write_text(json.dumps(config))
    return path


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"docker-registry exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 401:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"docker-registry did not answer {url} within {START_TIMEOUT_S} s")


def start_registry(root: Path) -> tuple[subprocess.Popen[bytes], LocalRegistry]:
    """Start a registry under `root`; the caller stops the returned process."""
    registry, htpasswd_bin = _tool("docker-registry"), _tool("htpasswd")
    password = secrets.token_urlsafe(12)
    htpasswd = root / "htpasswd"
    made = subprocess.run(
        [htpasswd_bin, "-Bbn", USERNAME, password], capture_output=True, check=False
    )
    if made.returncode != 0:
        pytest.fail(f"htpasswd failed: {made.stderr.decode(errors='replace')}")
    htpasswd.write_bytes(made.stdout)
    port = _free_port()
    config = _write_config(root, port, htpasswd)
    log = root / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([registry, "serve", str(config)], stdout=out, stderr=out)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}/v2/", log)
    except BaseException:
        stop(proc)
        raise
    return proc, LocalRegistry(f"127.0.0.1:{port}", USERNAME, password)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def running_registry(root: Path) -> Iterator[LocalRegistry]:
    """A started registry for the duration of the `with` block (for module fixtures)."""
    proc, registry = start_registry(root)
    try:
        yield registry
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """Session fixture, for use once this module is listed in the root `pytest_plugins`."""
    with running_registry(tmp_path_factory.mktemp("registry")) as registry:
        yield registry
