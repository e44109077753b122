"""Debian package plumbing for the rig: install missing packages by name, enable deb-src.

Why: the control plane is built from Debian's `kubernetes` source package with Debian's
Go and run with Debian's etcd, so `up` on a fresh machine must be able to fetch them.

It must not: run `apt-get update` when nothing is missing, install anything not named
here, touch sources other than adding one deb-src file that mirrors the existing
Debian source, or hide apt's error (the caller gets apt's own words).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

BUILD_PACKAGES = ("golang-go", "etcd-server", "rsync", "jq", "dpkg-dev", "make", "gcc", "libc6-dev",
                  "golang-github-modern-go-reflect2-dev", "iproute2")
# What real nodes run on (rig.realnode): Debian's Docker engine, iptables for kube-proxy
# and the kubelet, conntrack for kube-proxy's UDP cleanup.
NODE_PACKAGES = ("docker.io", "iptables", "conntrack")
SOURCES_DIR = Path("/etc/apt/sources.list.d")
OUR_SRC_FILE = SOURCES_DIR / "kaito-py-deb-src.sources"

Say = Callable[[str], None]


class AptError(RuntimeError):
    """apt could not do what the rig needs; the message carries apt's output."""


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


def _apt(args: list[str]) -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run([*_sudo(), "apt-get", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AptError(f"apt-get {' '.join(args)} failed (exit {proc.returncode}):\n"
                       f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def installed_version(package: str) -> str | None:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Version}", package],
                          capture_output=True, text=True)
    status, _, version = proc.stdout.partition("|")
    return version if proc.returncode == 0 and status.endswith("install ok installed") else None


def ensure_packages(packages: Iterable[str], say: Say) -> None:
    """Install those of `packages` that are missing; update the lists only if needed."""
    missing = [p for p in packages if installed_version(p) is None]
    if not missing:
        return
    say(f"installing Debian packages: {' '.join(missing)}")
    try:
        _apt(["install", "-y", "-qq", "--no-install-recommends", *missing])
    except AptError:
        _apt(["update", "-qq"])
        _apt(["install", "-y", "-qq", "--no-install-recommends", *missing])


def _has_deb_src() -> bool:
    for path in [Path("/etc/apt/sources.list"), *SOURCES_DIR.glob("*")]:
        if path.suffix not in (".list", ".sources") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if re.search(r"^\s*(Types:.*\bdeb-src\b|deb-src\s)", text, re.M):
            return True
    return False


def _debian_stanza() -> tuple[str, str]:
    """URI and Signed-By of the main Debian archive in the existing deb822 sources."""
    for path in sorted(SOURCES_DIR.glob("*.sources")):
        for stanza in path.read_text(errors="replace").split("\n\n"):
            lines = [ln for ln in stanza.splitlines() if ":" in ln and not ln.startswith("#")]
            fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
            uri = fields.get("URIs", "")
            binary = "deb" in fields.get("Types", "").split()
            if binary and "debian" in uri and "security" not in uri:
                return uri.split()[0], fields.get("Signed-By", "")
    return "http://deb.debian.org/debian", "/usr/share/keyrings/debian-archive-keyring.gpg"


def enable_deb_src(say: Say) -> None:
    """Add a deb-src source mirroring the Debian archive already configured, then update."""
    if _has_deb_src():
        return
    uri, signed_by = _debian_stanza()
    codename = _codename()
    text = (f"Types: deb-src\nURIs: {uri}\nSuites: {codename}\nComponents: main\n"
            + (f"Signed-By: {signed_by}\n" if signed_by else ""))
    say(f"enabling Debian source packages in {OUR_SRC_FILE}")
    if os.geteuid() == 0:
        OUR_SRC_FILE.write_text(text)
    else:
        subprocess.run(["sudo", "-n", "tee", str(OUR_SRC_FILE)], input=text, text=True,
                       capture_output=True, check=True)
    _apt(["update", "-qq"])


def _codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    return "bookworm"


def _newer(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


def source_version(package: str, say: Say) -> str | None:
    """Highest version apt offers of the source package; enables deb-src first if needed."""
    try:
        enable_deb_src(say)
    except (AptError, OSError, subprocess.CalledProcessError) as exc:
        say(f"cannot enable deb-src ({exc}); relying on the cache")
        return None
    proc = subprocess.run(["apt-cache", "showsrc", "--only-source", package],
                          capture_output=True, text=True)
    versions = re.findall(r"^Version: (\S+)$", proc.stdout, re.M)
    best: str | None = None
    for v in versions:
        if best is None or _newer(v, best):
            best = v
    return best
