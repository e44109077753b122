"""Failure reasons of the tuning job, and how they reach the reconciler.

Each step of the tuning Job (fetch, train, push) fails with one of these errors; the
entry point writes `str(error)` as ONE line to the container's termination message file,
where the reconciler reads it into the Workspace status. The message therefore starts
with a short category ("bad data:", "bad config:", "fetch refused:", "push denied by
registry:", "out of memory") and names the real cause. This module must not import torch
or do any I/O other than writing that one file and logging.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LOG_ENV = "KAITO_TERMINATION_LOG"
MAX_MESSAGE_CHARS = 1024


class TuneError(Exception):
    """A failure with a reason a user can act on; the category prefixes the message."""

    category = "tuning failed"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.category}: {detail}")
        self.detail = detail


class ConfigError(TuneError):
    category = "bad config"


class DataError(TuneError):
    category = "bad data"


class FetchError(TuneError):
    category = "fetch failed"


class FetchRefused(TuneError):
    category = "fetch refused"


class RegistryError(TuneError):
    category = "registry error"


class PushDenied(TuneError):
    category = "push denied by registry"


class PullDenied(TuneError):
    category = "pull denied by registry"


class OutOfMemory(TuneError):
    category = "out of memory"


def one_line(text: str) -> str:
    """Collapse whitespace so the message is one line, and cap its length."""
    flat = " ".join(text.split())
    if len(flat) > MAX_MESSAGE_CHARS:
        flat = flat[: MAX_MESSAGE_CHARS - 3] + "..."
    return flat


def termination_log_path(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG)


def write_termination_message(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Write `message` to the termination log; False when the file cannot be written."""
    path = termination_log_path(os.environ if environ is None else environ)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(one_line(message) + "\n")
    except OSError:
        return False
    return True


def run_step(step: Callable[[], int], env: Mapping[str, str], *, what: str,
             log: logging.Logger) -> int:
    """Run one container step (fetch, train, push, pull, copy) the way the Job needs it:
    a TuneError or an unexpected exception becomes exit code 1 and one termination-log
    line naming the cause; the traceback of an unexpected one goes to the log only."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return step()
    except TuneError as exc:
        log.error("%s", exc)
        write_termination_message(str(exc), env)
        return 1
    except Exception as exc:
        log.exception("unexpected failure")
        write_termination_message(
            f"{what} failed: internal error: {type(exc).__name__}: {exc}", env
        )
        return 1
