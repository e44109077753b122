"""rig.imageregistry.publish into a new, empty registry reuses the layers the last publish
kept (the seed) instead of sending them again, and the seed holds one version of each image.

Every cluster tier and the demo start a registry of their own and push GBs of runtime
images into it; without the seed each of them sends every layer again.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import tarfile
from pathlib import Path

import pytest

from rig import imageregistry
from rig.imageregistry import ImageRegistry, publish
from rig.images.dockerd import Engine

NAME = "ghcr.io/kaito-py/seed-test:1"
REPOSITORY = "kaito-py/seed-test"


def _import(engine: Engine) -> None:
    """NAME becomes a one-layer image with content never seen before."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = secrets.token_bytes(256 * 1024)
        info = tarfile.TarInfo("payload")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    engine.run("import", "-", NAME, input_bytes=buf.getvalue())


def _blob_file(root: Path, digest: str) -> Path:
    hexdigest = digest.split(":", 1)[1]
    return root / "sha256" / hexdigest[:2] / hexdigest / "data"


def test_a_new_registry_gets_the_kept_layers_and_the_seed_keeps_one_version(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = tmp_path / "seed"
    monkeypatch.setattr(imageregistry, "SEED_DIR", seed)
    first, second = ImageRegistry(tmp_path / "a"), ImageRegistry(tmp_path / "b")
    try:
        _import(engine)
        first.start()
        said: list[str] = []
        publish(engine, first, [NAME], said.append)
        assert not [m for m in said if m.startswith("linked")]  # nothing kept yet
        _, manifest = first.manifest(REPOSITORY, "1")
        digests = [manifest["config"]["digest"], *(la["digest"] for la in manifest["layers"])]
        kept = [_blob_file(seed / "blobs", d) for d in digests]
        assert all(f.is_file() for f in kept)

        second.start()
        said.clear()
        publish(engine, second, [NAME], said.append)
        assert f"linked {len(digests)} layer(s) the last publish kept into the registry" in said
        blobs = second.root / "data" / "docker" / "registry" / "v2" / "blobs"
        for digest, kept_file in zip(digests, kept, strict=True):
            # the very file the seed keeps (a hard link), served intact
            assert _blob_file(blobs, digest).stat().st_ino == kept_file.stat().st_ino
            body = second.blob(REPOSITORY, digest)
            assert f"sha256:{hashlib.sha256(body).hexdigest()}" == digest
        assert second.manifest(REPOSITORY, "1")[0] == first.manifest(REPOSITORY, "1")[0]

        _import(engine)  # a new version under the same name
        publish(engine, second, [NAME], said.append)
        _, newer = second.manifest(REPOSITORY, "1")
        new_layer = newer["layers"][0]["digest"]
        assert _blob_file(seed / "blobs", new_layer).is_file()
        assert not _blob_file(seed / "blobs", manifest["layers"][0]["digest"]).exists()
    finally:
        first.stop(remove=True)
        second.stop(remove=True)
        engine.run("rmi", NAME, check=False)
    # removing the registries' data leaves the seed's files (links, not the only copy)
    assert _blob_file(seed / "blobs", new_layer).is_file()


def test_a_broken_seed_costs_a_full_push_and_says_so_never_a_failed_publish(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = tmp_path / "seed"
    seed.write_text("not a folder")  # e.g. a cache a user mangled
    monkeypatch.setattr(imageregistry, "SEED_DIR", seed)
    registry = ImageRegistry(tmp_path / "a")
    try:
        _import(engine)
        registry.start()
        said: list[str] = []
        published = publish(engine, registry, [NAME], said.append)
        assert [p.name for p in published] == [NAME]
        assert any(m.startswith(f"the pushed layers could not be kept in {seed}") for m in said)
        _, manifest = registry.manifest(REPOSITORY, "1")  # pushed whole, served intact
        layer = manifest["layers"][0]["digest"]
        body = registry.blob(REPOSITORY, layer)
        assert f"sha256:{hashlib.sha256(body).hexdigest()}" == layer
    finally:
        registry.stop(remove=True)
        engine.run("rmi", NAME, check=False)
