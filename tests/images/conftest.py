"""Fixtures of the image tests: the Docker engine, the built images, running containers.

The engine is the one `make images` uses (rig.images.dockerd: a reachable one, or ours,
started here). Each image is built once per session, or reused when the content hash of
its inputs is unchanged (rig.images.build). Containers run with the host network on
loopback only and are removed afterwards, their logs kept in the failure message.

It must not skip: an engine that cannot start, or an image that does not build, FAILS
the test with the reason. Building is part of a test's setup, so the image tests have a
long timeout (a cold build of the vLLM image is many minutes on 2 cores).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import requests

from rig.images import build, dockerd
from rig.images.dockerd import Engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The engine. It is left running (the demo and other sessions share it, and it holds
    the image cache); `make down` stops the one rig.images started."""
    try:
        return dockerd.ensure()
    except RuntimeError as exc:
        pytest.fail(f"no Docker engine: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def image(engine: Engine) -> Callable[[str], str]:
    """image("cpu-runtime") -> its tag, built (or reused by content hash) once per session."""
    done: dict[str, str] = {}
    known = {i.folder: i for i in build.IMAGES}

    def get(folder: str) -> str:
        if folder not in done:
            started = time.monotonic()
            try:
                built = build.build(engine, known[folder], lambda m: print(m, flush=True))
            except (RuntimeError, OSError, ValueError, subprocess.CalledProcessError) as exc:
                pytest.fail(f"image {folder} did not build: {exc}", pytrace=False)
            print(f"{built.tag}: {'reused' if built.reused else 'built'} in "
                  f"{time.monotonic() - started:.0f}s, {built.size_mb:.0f} MB")
            done[folder] = built.tag
        return done[folder]

    return get


@dataclass(frozen=True)
class Container:
    engine: Engine
    name: str

    def logs(self) -> str:
        out = self.engine.run("logs", "--tail", "200", self.name, check=False)
        return (out.stdout + out.stderr)[-6000:]

    def running(self) -> bool:
        out = self.engine.run("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"

    def wait_http(self, url: str, timeout: float, *, verify: str | bool = True,
                  give_up_on: str | None = None) -> None:
        """Poll url until HTTP 200; FAIL with the container's logs when it exits, times out
        or answers a body containing `give_up_on`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                pytest.fail(f"{self.name} exited before {url} answered:\n{self.logs()}",
                            pytrace=False)
            try:
                answer = requests.get(url, timeout=5, verify=verify)
                if answer.status_code == 200:
                    return
                if give_up_on and give_up_on in answer.text:
                    pytest.fail(f"{url}: {answer.text[:300]}\n{self.logs()}", pytrace=False)
            except (requests.RequestException, OSError):
                pass  # still starting (or its CA file not written yet)
            time.sleep(1)
        pytest.fail(f"{url} did not answer 200 within {timeout:.0f}s:\n{self.logs()}",
                    pytrace=False)


@pytest.fixture
def container(engine: Engine) -> Iterator[Callable[..., Container]]:
    """container(image, *args, run_args=[...]) -> a detached, host-network container."""
    started: list[Container] = []

    def run(tag: str, *command: str, run_args: tuple[str, ...] = ()) -> Container:
        name = f"kaito-test-{uuid.uuid4().hex[:10]}"
        engine.run("run", "--detach", "--name", name, "--network", "host", *run_args, tag,
                   *command)
        box = Container(engine, name)
        started.append(box)
        return box

    yield run
    for box in started:
        engine.run("rm", "--force", box.name, check=False)


@contextmanager
def one_shot(engine: Engine, tag: str, *command: str, run_args: tuple[str, ...] = (),
             timeout: float = 900) -> Iterator[subprocess.CompletedProcess[str]]:
    """`docker run --rm` to completion; yields the finished process (output included)."""
    yield engine.run("run", "--rm", "--network", "host", *run_args, tag, *command,
                     timeout=timeout, check=False)
