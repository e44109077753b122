"""Start, probe and stop the rig's own processes, identified by recorded PIDs.

Why: `down` must stop exactly what `up` started (several control planes, the demo's and
the tests', may run side by side), and `status` must tell a live component from a
recycled PID. Each component runs in its own session, so its process group id is its PID.

It must not: signal a PID whose command line does not match what we recorded (a
recycled PID belongs to someone else), use broad kills by name, or wait forever.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Run by `setsid --fork`: record our PID (atomically), then become the component, so the
# component is a session (and process group) leader whose parent is init, not us.
_LAUNCH = 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"'


def start(argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
          cwd: Path | None = None, timeout: float = 10.0, becomes: str | None = None) -> int:
    """Start argv detached (own session, reparented to init), output to log; return its PID.

    becomes: the program argv finally execs (argv is a wrapper such as unshare); the PID is
    returned once it runs that program, or once it is gone.

    Detached so that it outlives this process (the tests' control plane is reused by the
    next session) without leaving a child Python would warn about or never reap.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile = log.with_suffix(".pid")
    pidfile.unlink(missing_ok=True)
    with open(log, "ab") as out:
        launcher = subprocess.run(["setsid", "--fork", "sh", "-c", _LAUNCH, str(pidfile), *argv],
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=env, cwd=cwd, timeout=timeout)
    if launcher.returncode != 0:
        raise OSError(f"setsid could not start {argv[0]} (exit {launcher.returncode}); see {log}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(pidfile.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.01)
            continue
        # The PID is written just before `exec`: wait until it runs argv[0] (or is gone).
        # While the kernel is exec'ing a large binary the cmdline can read empty for a
        # moment; that is not "gone", so only a missing /proc entry ends the wait early.
        while time.monotonic() < deadline:
            current = cmdline(pid)
            if (current and current[0] == (becomes or argv[0])) \
                    or not Path(f"/proc/{pid}").exists():
                return pid
            time.sleep(0.01)
    raise OSError(f"{argv[0]} did not start within {timeout}s; see {log}")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_ours(pid: int, argv0: str, marker: str) -> bool:
    """True when pid runs argv0 and its command line mentions marker (our state dir)."""
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        return False
    argv = cmdline(pid)
    return bool(argv) and argv[0] == argv0 and any(marker in a for a in argv)


def stop(pid: int, argv0: str, marker: str, *, grace: float = 5.0) -> bool:
    """SIGTERM the process group of pid (ours only), then SIGKILL after grace. True if stopped."""
    if not is_ours(pid, argv0, marker):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not is_ours(pid, argv0, marker):
                return True
            time.sleep(0.05)
    return not is_ours(pid, argv0, marker)


def probe(url: str, *, ca: Path | None = None, cert: tuple[Path, Path] | None = None,
          timeout: float = 5.0) -> tuple[bool, str]:
    """GET url; (True, body) on HTTP 200. ca=None with https means: do not verify."""
    ctx: ssl.SSLContext | None = None
    if url.startswith("https:"):
        ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl._create_unverified_context()  # noqa: S323
        if cert:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:  # noqa: S310
            return resp.status == 200, resp.read(4096).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}: {exc.read(2048).decode(errors='replace')}"
    except (OSError, ssl.SSLError) as exc:
        return False, str(exc)


def tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, or a sentence saying it does not exist."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])
