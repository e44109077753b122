"""What every demo module shares: the repo path, the error type, the step printer.

Why: hack/demo.py runs as `__main__`, so the steps cannot import it back (they would get
a second copy of DemoError); this small module is the one both import. No I/O here.
"""

from __future__ import annotations

import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE = REPO / ".local"


class DemoError(RuntimeError):
    """A step failed; the message says what was expected, what was seen and where the logs are."""


class Steps:
    """Prints `[n/11] title` when a step starts and its elapsed seconds when it ends."""

    TOTAL = 11

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.step_started = self.started
        self.number = 0

    def begin(self, title: str) -> None:
        self.number += 1
        self.step_started = time.monotonic()
        print(f"\n[{self.number}/{self.TOTAL}] {title}", flush=True)

    def say(self, text: str) -> None:
        print(f"      {text}", flush=True)

    def end(self) -> None:
        step = time.monotonic() - self.step_started
        total = time.monotonic() - self.started
        print(f"      done in {step:.1f} s (total {total:.1f} s)", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.step_started

    def total(self) -> float:
        return time.monotonic() - self.started


def demo_dir(state: Path) -> Path:
    return state / "demo"
