"""`make push REGISTRY=...` (python -m rig.images push): the images retagged under another
registry and pushed there, here the local registry on loopback with basic auth.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from rig.images.dockerd import Engine
from tests.support.registry import running_registry

REPO = Path(__file__).resolve().parents[2]

# Setup builds the image when its inputs changed: minutes, not the default 15.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]


def test_push_retags_under_the_registry_and_pushes(engine: Engine, image: Callable[[str], str],
                                                   tmp_path: Path) -> None:
    tag = image("operator")
    version = tag.rpartition(":")[2]
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config"),
           "DOCKER_HOST": engine.host}
    root = tmp_path / "registry-root"
    root.mkdir()
    with running_registry(root) as registry:
        login = subprocess.run(engine.argv("login", "--username", registry.username,
                                           "--password-stdin", registry.host),
                               input=registry.password, capture_output=True, text=True,
                               env=env, check=False, timeout=60)
        assert login.returncode == 0, login.stderr
        push = subprocess.run([sys.executable, "-m", "rig.images", "push",
                               f"{registry.host}/mirror", "operator"], cwd=REPO, env=env,
                              capture_output=True, text=True, check=False, timeout=900)
        assert push.returncode == 0, push.stdout + push.stderr
        tags = requests.get(f"http://{registry.host}/v2/mirror/kaito/tags/list", timeout=30,
                            auth=(registry.username, registry.password))
    assert tags.status_code == 200, tags.text
    assert tags.json()["tags"] == [version]
    # The registry's name is dropped afterwards: a loopback registry's port is gone next
    # time, and a name left behind would pin the image's layers on the disk.
    left = engine.run("image", "inspect", f"{registry.host}/mirror/kaito:{version}",
                      check=False)
    assert left.returncode != 0, "the pushed name was left in the engine"
