"""A tiny test image pushed straight into the local registry, no Docker daemon involved.

Why: real-node tests need an image that a real kubelet pulls from the local registry and
runs, long before the product's images (images/, issue I) exist or while they build. The
image is Debian's static busybox (package busybox-static) plus the files a test asks
for, written through the registry's v2 HTTP API (blob uploads, then a schema-2 manifest)
so that nothing but the registry is needed to make it.

It must not: talk to any registry but the local one it is given, or skip: a missing
busybox or a refused upload FAILS the test with the reason.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from tests.support.registry import LocalRegistry

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "cat", "echo", "env", "httpd", "id", "ls", "mkdir", "nc", "printf", "sleep",
           "touch", "dd", "head", "tail", "test", "true", "false", "wc", "grep", "hostname")
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def _layer(files: Mapping[str, bytes]) -> bytes:
    from rig import debian

    try:
        debian.ensure_packages(("busybox-static",), say=print)
    except debian.AptError as exc:
        pytest.fail(f"{BUSYBOX} is missing and apt could not install it: {exc}", pytrace=False)
    if not BUSYBOX.is_file():
        pytest.fail(f"{BUSYBOX} is missing: apt-get install busybox-static", pytrace=False)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755), ("www", 0o755)):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for path, data in {"etc/passwd": b"root:x:0:0:root:/:/bin/sh\n", **files}.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _upload(session: requests.Session, base: str, repo: str, data: bytes) -> str:
    digest = _digest(data)
    started = session.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=30)
    if started.status_code != 202:
        pytest.fail(f"registry refused an upload to {repo}: {started.status_code} "
                    f"{started.text[:300]}", pytrace=False)
    location = urljoin(base + "/", started.headers["Location"])
    sep = "&" if "?" in location else "?"
    put = session.put(f"{location}{sep}digest={digest}", data=data, timeout=60,
                      headers={"Content-Type": "application/octet-stream"})
    if put.status_code != 201:
        pytest.fail(f"blob upload to {repo} failed: {put.status_code} {put.text[:300]}",
                    pytrace=False)
    return digest


def push_busybox_image(registry: LocalRegistry, repo: str, tag: str = "v1", *,
                       files: Mapping[str, bytes] | None = None,
                       cmd: Sequence[str] = ("sh",), env: Sequence[str] = ()) -> str:
    """Push busybox + files as REPO:TAG to the local registry; return the image reference."""
    raw = _layer(dict(files or {}))
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": list(cmd), "Env": ["PATH=/bin", *env], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(raw)]},
    }).encode()
    base = f"http://{registry.host}"
    with requests.Session() as session:
        session.auth = (registry.username, registry.password)
        layer_digest = _upload(session, base, repo, layer)
        config_digest = _upload(session, base, repo, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": len(config), "digest": config_digest},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(layer), "digest": layer_digest}],
        }).encode()
        put = session.put(f"{base}/v2/{repo}/manifests/{tag}", data=manifest, timeout=30,
                          headers={"Content-Type": MANIFEST_V2})
        if put.status_code != 201:
            pytest.fail(f"manifest push of {repo}:{tag} failed: {put.status_code} "
                        f"{put.text[:300]}", pytrace=False)
    return registry.reference(repo, tag)
