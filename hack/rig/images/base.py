"""The Debian base image, made locally with debootstrap when no registry can be pulled.

Why: the Dockerfiles start `FROM debian:<point release>-slim`, as they would anywhere.
These machines reach Debian's mirror but no container registry, so when the engine lacks
that image we debootstrap the same Debian release, trim it the way Debian's -slim images
are trimmed (no docs, man pages, locales, apt lists), and import it under the SAME name:
the Dockerfiles stay unchanged between here and the wild. The rootfs tarball is cached
under ~/.cache/kaito-py/images/base so that a fresh engine only re-imports it.

It must not: tag an image with a release it does not hold (the mirror's point release is
checked against the tag), or import a tree with the host's /proc or /dev in it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from rig.images.dockerd import Engine

CACHE = Path.home() / ".cache" / "kaito-py" / "images" / "base"
RECIPE_LABEL = "org.kaito-py.base-recipe"
MIRROR = "http://deb.debian.org/debian"
SUITES = {"12": "bookworm"}
# What Debian's -slim images leave out, so later `apt-get install`s stay slim too.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
"""
SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: {suite} {suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# As in Debian's images: no package caches kept after apt runs.
APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Install-Recommends "false";
"""
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")
# apt needs these folders (and their partial/ subfolders), not the files in them.
EMPTY = ("var/cache/apt/archives", "var/cache/apt", "var/lib/apt/lists")


def release_of(name: str) -> str:
    """`debian:12.15-slim` -> `12.15`; anything else is not a base we can make."""
    match = re.fullmatch(r"debian:(\d+\.\d+)-slim", name)
    if not match:
        raise ValueError(f"{name}: only debian:<major>.<minor>-slim bases can be made here")
    return match.group(1)


def ensure(engine: Engine, name: str, say: Callable[[str], None]) -> str:
    """The image ID of `name`, making and importing it first when the engine lacks it."""
    recipe = hashlib.sha256("".join([DPKG_EXCLUDES, SOURCES, APT_CLEAN, *TRIM, *EMPTY])
                            .encode()).hexdigest()[:12]
    found = engine.run("image", "inspect", "--format",
                       f'{{{{.Id}}}} {{{{index .Config.Labels "{RECIPE_LABEL}"}}}}', name,
                       check=False)
    if found.returncode == 0:
        image_id, _, made_with = found.stdout.strip().partition(" ")
        # A pulled image (no label) is used as it is; one we made with an older recipe is
        # made again.
        if made_with in ("", "<no value>", recipe):
            return image_id
    tarball = CACHE / f"{name.replace(':', '-')}-{recipe}.tar"
    if not tarball.exists():
        say(f"{name}: not in the engine; debootstrapping Debian {release_of(name)} (~1 min)")
        _make(name, tarball)
    engine.run("import", "--change", 'CMD ["bash"]', "--change",
               f"LABEL {RECIPE_LABEL}={recipe}", str(tarball), name, timeout=600)
    return engine.run("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()


def _make(name: str, tarball: Path) -> None:
    release = release_of(name)
    suite = SUITES.get(release.split(".")[0])
    if suite is None:
        raise ValueError(f"{name}: no Debian suite known for release {release}")
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is missing: apt-get install debootstrap "
                           "(hack/bootstrap.sh installs it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp) / "root"
        proc = subprocess.run(["debootstrap", "--variant=minbase", suite, str(root), MIRROR],
                              capture_output=True, text=True, check=False, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap {suite} failed ({proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
        got = (root / "etc" / "debian_version").read_text().strip()
        if got != release:
            raise RuntimeError(f"the mirror serves Debian {got}, not {release}: bump the "
                               f"FROM lines in images/*/Dockerfile to debian:{got}-slim")
        _trim(root, suite)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "--exclude=./proc/*", "--exclude=./sys/*",
                        "--exclude=./dev/*", "-C", str(root), "-cf", str(partial), "."],
                       check=True, timeout=600)
        partial.rename(tarball)


def _trim(root: Path, suite: str) -> None:
    for rel in TRIM:
        for child in (root / rel).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for rel in EMPTY:
        for child in (root / rel).glob("*"):
            if child.is_file() and child.name != "lock":
                child.unlink()
    (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(DPKG_EXCLUDES)
    (root / "etc/apt/apt.conf.d/docker-clean").write_text(APT_CLEAN)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES.format(suite=suite))
