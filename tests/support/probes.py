"""Test-side probes: wait until a condition holds; find processes, ports, netns left behind.

Why: the rig, demo and control-plane tests each check that what they started is gone
after a stop, and poll the cluster until something happens; these checks are written
once here, apart from the rig's own process code, so a bug there cannot hide itself.

It must not: start, signal or stop anything (it only looks), or wait without a bound
(`wait_for` FAILS the test at its timeout, it never skips).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll `check` every 0.2 s until it returns a truthy value, and return that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def still_running(pids: Iterable[int], grace: float = 10.0) -> list[int]:
    """The pids still alive after waiting up to `grace` seconds for them to go."""
    pids = list(pids)
    deadline = time.monotonic() + grace
    while (running := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return running


def listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def netns_left(names: Iterable[str]) -> list[str]:
    """Those of `names` that `ip netns list` still shows."""
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout.split()
    return [name for name in names if name in listed]
