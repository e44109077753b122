"""Build the control plane's binaries from Debian's `kubernetes` source package, once.

Why: the machines this project runs on have no Docker, so `kind` is out; Debian's source
package builds every server component offline with Debian's Go. The binaries go to a
cache outside the repo keyed by the source version and our reflect2 fix, so a second
`up` finds them and starts in seconds.

It must not: touch the repo, build twice when two `up`s race (a lock file serialises
them), leave the ~2.5 GB source tree and Go cache behind after a successful build, or
use any kubectl other than the one it built (the server is 1.20; skew matters).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rig import debian

# Go commands built with `make WHAT=cmd/...`; the kubelet and kube-proxy run the rig's real nodes.
GO_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl",
               "kubelet", "kube-proxy")
# The pod sandbox's pause process, compiled from the same tree (build/pause/linux/pause.c).
PAUSE = "pause"
BINARIES = (*GO_COMMANDS, PAUSE)
SOURCE_PACKAGE = "kubernetes"
REFLECT2_PACKAGE = "golang-github-modern-go-reflect2-dev"
REFLECT2_MOD = "github.com/modern-go/reflect2"
REFLECT2_SRC = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
# Bump when the build recipe changes in a way that changes the binaries.
FIX_REVISION = "reflect2-1.0.2-vendor-swap/2+kubelet+kube-proxy+pause"
HEARTBEAT_SECONDS = 15.0


class BuildError(RuntimeError):
    """The binaries could not be built; the message says which step and why."""


def cache_root() -> Path:
    env = os.environ.get("KAITO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kaito-py"


def fix_hash() -> str:
    """Hash of our fix: the recipe revision plus the reflect2 package version it copies."""
    version = debian.installed_version(REFLECT2_PACKAGE) or "absent"
    return hashlib.sha256(f"{FIX_REVISION}|{version}".encode()).hexdigest()[:12]


def _complete(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) and (bin_dir / name).is_file()
               for name in BINARIES)


def find_cached(root: Path | None = None) -> Path | None:
    """Newest complete cached bin dir, without asking apt (used when apt cannot answer)."""
    root = root or cache_root()
    found = [d / "bin" for d in root.glob("k8s-*") if _complete(d / "bin")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class Progress:
    """Prints one line per build step (and per build output line) with elapsed seconds."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.start = time.monotonic()
        self.stream = stream or sys.stderr

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.start
        print(f"[build {elapsed:5.0f}s] {text}", file=self.stream, flush=True)


def ensure_binaries(progress: Progress | None = None) -> Path:
    """Return the bin dir holding BINARIES, building them first when the cache lacks them."""
    progress = progress or Progress()
    debian.ensure_packages(debian.BUILD_PACKAGES, say=progress.say)
    version = debian.source_version(SOURCE_PACKAGE, say=progress.say)
    if version is None:
        cached = find_cached()
        if cached is not None:
            return cached
        raise BuildError(f"apt knows no source package {SOURCE_PACKAGE!r} (deb-src missing?)")
    key_dir = cache_root() / f"k8s-{version}-{fix_hash()}"
    bin_dir = key_dir / "bin"
    if _complete(bin_dir):
        return bin_dir
    key_dir.mkdir(parents=True, exist_ok=True)
    with open(key_dir / "build.lock", "w") as lock:
        if not _try_lock(lock):
            progress.say(f"another build holds {key_dir / 'build.lock'}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(bin_dir):
            return bin_dir
        _build(key_dir, version, progress)
    return bin_dir


def _try_lock(lock: TextIO) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _run(cmd: Sequence[str], progress: Progress, *, cwd: Path, env: dict[str, str] | None = None,
         echo: bool = False) -> None:
    """Run one build command; stream its lines when echo, else keep them for the error."""
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    tail: list[str] = []
    done = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(progress, cmd[0], done), daemon=True)
    beat.start()
    try:
        for line in proc.stdout:
            tail = [*tail, line.rstrip()][-40:]
            if echo and line.strip():
                progress.say("  " + line.rstrip())
    finally:
        done.set()
    if proc.wait() != 0:
        raise BuildError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def _heartbeat(progress: Progress, what: str, done: threading.Event,
               every: float = HEARTBEAT_SECONDS) -> None:
    """The Go build is silent for minutes: say it is still working."""
    while not done.wait(every):
        progress.say(f"  ... {what} still running (2 cores: about 4-5 minutes in all)")


def _build(key_dir: Path, version: str, progress: Progress) -> None:
    work = key_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    progress.say(f"step 1/5: apt-get source {SOURCE_PACKAGE} into {work}")
    _run(["apt-get", "source", "-qq", f"{SOURCE_PACKAGE}={version}"], progress, cwd=work)
    trees = [d for d in work.iterdir() if d.is_dir() and d.name.startswith(SOURCE_PACKAGE + "-")]
    if len(trees) != 1:
        raise BuildError(f"expected one unpacked source tree in {work}, found {trees}")
    src = trees[0]
    progress.say("step 2/5: replace vendored reflect2 v1.0.1 with Debian's 1.0.2 (Go >= 1.18 fix)")
    apply_reflect2_fix(src)
    progress.say("step 3/5: make WHAT=" + " ".join(f"cmd/{b}" for b in GO_COMMANDS) + " (minutes)")
    gopath = work / ".go"
    (gopath / "src" / "k8s.io").mkdir(parents=True)
    link = gopath / "src" / "k8s.io" / "kubernetes"
    link.symlink_to(src)
    (work / "home").mkdir()
    env = {**os.environ, "GOPATH": str(gopath), "GOCACHE": str(work / ".gocache"),
           "HOME": str(work / "home"), "CGO_ENABLED": "0", "GOPROXY": "off"}
    env.pop("GOROOT", None)
    what = "WHAT=" + " ".join(f"cmd/{b}" for b in GO_COMMANDS)
    _run(["make", what], progress, cwd=link, env=env, echo=True)
    out = src / "_output" / "local" / "bin" / "linux" / "amd64"
    _run(["gcc", "-Os", "-static", "-o", str(out / PAUSE), "build/pause/linux/pause.c"],
         progress, cwd=src)
    progress.say("step 4/5: copy binaries into the cache")
    tmp = key_dir / "bin.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in BINARIES:
        if not (out / name).is_file():
            raise BuildError(f"the build finished but {out / name} is missing")
        shutil.copy2(out / name, tmp / name)
    shutil.rmtree(key_dir / "bin", ignore_errors=True)
    tmp.rename(key_dir / "bin")
    progress.say(f"step 5/5: drop the source tree and Go cache ({work})")
    _chmod_writable(work)
    shutil.rmtree(work, ignore_errors=True)
    progress.say(f"done: {key_dir / 'bin'}")


def _chmod_writable(root: Path) -> None:
    """Go's module cache is read-only; make it deletable."""
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            path = Path(dirpath) / d
            if not path.is_symlink():
                path.chmod(0o755)


def apply_reflect2_fix(src: Path, reflect2_src: Path = REFLECT2_SRC) -> None:
    """Swap vendor/github.com/modern-go/reflect2 for Debian's 1.0.2 and record it in go.mod."""
    if not reflect2_src.is_dir():
        raise BuildError(f"{reflect2_src} is missing: install {REFLECT2_PACKAGE}")
    vendored = src / "vendor" / "github.com" / "modern-go" / "reflect2"
    if not vendored.is_dir():
        raise BuildError(f"{vendored} not found: the source layout changed")
    shutil.rmtree(vendored)
    vendored.mkdir()
    copied = 0
    for f in sorted(reflect2_src.iterdir()):
        if f.suffix in (".go", ".s") and not f.name.endswith("_test.go"):
            shutil.copy2(f, vendored / f.name)
            copied += 1
    if copied == 0:
        raise BuildError(f"no .go/.s files in {reflect2_src}")
    for rel in ("go.mod", "vendor/modules.txt"):
        path = src / rel
        text = path.read_text()
        new = text.replace(f"{REFLECT2_MOD} v1.0.1", f"{REFLECT2_MOD} v1.0.2")
        if new == text and f"{REFLECT2_MOD} v1.0.2" not in text:
            raise BuildError(f"{path} does not name reflect2 v1.0.1")
        path.write_text(new)
