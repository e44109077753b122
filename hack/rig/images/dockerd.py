"""A Docker engine to build and run the images: the one already reachable, or our own.

Why: these machines have Debian's docker.io but no systemd, so no daemon runs by itself.
When none is reachable we start dockerd with its own socket, data root, exec root and
pidfile under ~/.cache/kaito-py/docker, so that it never collides with another engine
(the rig's per-node engines, a user's) and `make down` can stop exactly it. Our engine
has no bridge and no iptables rules: builds and smoke tests use the host network
(loopback only), so stopping it leaves nothing behind in the host's network.

It must not: stop an engine it did not start (the pidfile and the command line must both
match), or guess: when the engine cannot start, the error carries its log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rig import procs

STATE = Path(os.environ.get("KAITO_DOCKER_HOME",
                            Path.home() / ".cache" / "kaito-py" / "docker"))
DOCKERD = "/usr/sbin/dockerd"
# Debian's client matches Debian's daemon (20.10); a newer client elsewhere on PATH may not.
CLIENTS = ("/usr/bin/docker", "docker")
SYSTEM_SOCKET = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Engine:
    """A reachable Docker engine: its client binary and its DOCKER_HOST."""

    client: str
    host: str
    ours: bool
    started: bool = False  # by this call of ensure(): the caller may stop it when done

    def argv(self, *args: str) -> list[str]:
        return [self.client, "--host", self.host, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True,
            input_bytes: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run one docker command; on failure raise with its output."""
        proc = subprocess.run(self.argv(*args), capture_output=True, check=False,
                              timeout=timeout, input=input_bytes)
        out = subprocess.CompletedProcess(proc.args, proc.returncode,
                                          proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])} failed ({proc.returncode}):\n"
                               f"{out.stdout[-3000:]}{out.stderr[-3000:]}")
        return out


def client() -> str:
    for candidate in CLIENTS:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("no docker client: install Debian's docker.io (hack/bootstrap.sh does)")


def our_host() -> str:
    return f"unix://{STATE / 'docker.sock'}"


def reachable(docker: str, host: str) -> bool:
    try:
        proc = subprocess.run([docker, "--host", host, "version", "--format",
                               "{{.Server.Version}}"], capture_output=True, check=False,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def ensure(*, start: bool = True, timeout: float = 90) -> Engine:
    """The engine to use: $DOCKER_HOST, the system one, or ours (started when needed)."""
    docker = client()
    candidates = [h for h in (os.environ.get("DOCKER_HOST"), SYSTEM_SOCKET) if h]
    for host in candidates:
        if host != our_host() and reachable(docker, host):
            return Engine(docker, host, ours=False)
    if reachable(docker, our_host()):
        return Engine(docker, our_host(), ours=True)
    if not start:
        raise RuntimeError(f"no Docker engine reachable at {[*candidates, our_host()]}")
    return _start(docker, timeout)


def _argv() -> list[str]:
    return [DOCKERD, "--host", our_host(), "--data-root", str(STATE / "data"),
            "--exec-root", str(STATE / "exec"), "--pidfile", str(STATE / "engine.pid"),
            "--bridge", "none", "--iptables=false", "--ip-masq=false",
            "--storage-driver", "overlay2", "--log-level", "warn"]


def _start(docker: str, timeout: float) -> Engine:
    if not Path(DOCKERD).exists():
        raise RuntimeError(f"{DOCKERD} is missing: apt-get install docker.io "
                           "(hack/bootstrap.sh installs it)")
    STATE.mkdir(parents=True, exist_ok=True)
    log = STATE / "dockerd.log"
    started = time.monotonic()
    pid = procs.start(_argv(), log, timeout=30)
    while time.monotonic() - started < timeout:
        if reachable(docker, our_host()):
            # Ours only if the process we launched is the one answering: a slow answer
            # from an engine already running sends us here too, and our launch then exits
            # (its pidfile is taken); that engine belongs to whoever started it.
            return Engine(docker, our_host(), ours=True,
                          started=procs.is_ours(pid, DOCKERD, str(STATE)))
        if not procs.is_ours(pid, DOCKERD, str(STATE)):
            break
        time.sleep(0.5)
    procs.stop(pid, DOCKERD, str(STATE))
    raise RuntimeError(f"dockerd did not become reachable at {our_host()} within "
                       f"{time.monotonic() - started:.0f}s; its log ({log}):\n{procs.tail(log)}")


def stop() -> bool:
    """Stop the dockerd we started (and with it its containerd). True if one was running."""
    # dockerd.pid is written by procs.start (the process it started); engine.pid by dockerd.
    for pidfile in (STATE / "dockerd.pid", STATE / "engine.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if procs.stop(pid, DOCKERD, str(STATE), grace=30.0):
            return True
    return False
