"""Copy an adapter from a mounted volume into the adapters directory the server loads.

Why: `inference.adapters[].source.volumeSource` names a volume holding an adapter (for
example the PVC a tuning Workspace wrote with `output.volumeSource`). The inference pod
mounts it read-only and an init container (`kaito-oci copy SRC DEST [--scale S]`) copies
its files into the same emptyDir the image pullers fill, so every adapter reaches the model
server the same way and vLLM's strength baking (runtime.adapters.scale) works on a
writable copy, never on the user's volume.

Rules, each failure one `bad data:` line: SRC must be a directory of flat regular files
(links are followed only to regular files inside SRC) holding `adapter_config.json`, within
`max_bytes` in total. Hidden entries (names starting with `.`, such as the tuning Job's
`.kaito-work` checkpoints or a configMap volume's `..data`) and ext4's `lost+found` are
skipped and logged. What it must not do: write anywhere but DEST, follow a link out of SRC,
or leave a half-written file under its final name.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from runtime.jobstep import DataError, TuneError

LOG = logging.getLogger("kaito.oci.copy")
REQUIRED = "adapter_config.json"
SKIPPED_NAMES = frozenset({"lost+found"})


class CopyError(TuneError):
    """Writing DEST failed (e.g. the node's disk is full): not the adapter's fault."""

    category = "copy failed"


@dataclass(frozen=True, slots=True)
class Copied:
    files: tuple[str, ...]
    skipped: tuple[str, ...]
    total_bytes: int


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a link"
    return "not a regular file (device, pipe or socket)"


def _regular(src: Path, entry: Path, root: Path) -> Path:
    """The regular file behind `entry` (a file, or a link to a file inside `root`)."""
    info = entry.lstat()
    if stat.S_ISREG(info.st_mode):
        return entry
    if stat.S_ISLNK(info.st_mode):
        target = entry.resolve()
        if target.is_file() and root in target.parents:
            return target
        raise DataError(
            f"adapter source {src} holds {entry.name!r}, a link to outside the "
            "volume or to something that is not a file: only flat regular files "
            "can be copied"
        )
    raise DataError(
        f"adapter source {src} holds {entry.name!r}, {_kind(info.st_mode)}: only "
        "flat regular files can be copied (put the adapter files at the top level "
        "of the volume)"
    )


def plan_copy(src: Path, max_bytes: int) -> tuple[dict[str, Path], list[str], int]:
    """Check SRC; return name -> file to copy, the skipped names and the total size."""
    if not src.is_dir():
        raise DataError(f"adapter source {src} is not a directory: is the volume mounted?")
    root = src.resolve()
    files: dict[str, Path] = {}
    skipped: list[str] = []
    for entry in sorted(src.iterdir()):
        if entry.name.startswith(".") or entry.name in SKIPPED_NAMES:
            skipped.append(entry.name)
            continue
        files[entry.name] = _regular(src, entry, root)
    if REQUIRED not in files:
        found = ", ".join(files) or "nothing"
        raise DataError(
            f"adapter source {src} has no {REQUIRED} (found: {found}): it must "
            "hold a LoRA adapter's files at its top level"
        )
    total = sum(path.stat().st_size for path in files.values())
    if total > max_bytes:
        raise DataError(
            f"adapter source {src} is {total} bytes, over the limit of {max_bytes} bytes"
        )
    return files, skipped, total


def copy_adapter(src: Path, dest: Path, *, max_bytes: int = 1 << 30) -> Copied:
    """Copy SRC's adapter files into DEST (created if needed); each file lands atomically."""
    files, skipped, total = plan_copy(src, max_bytes)
    for name in skipped:
        LOG.info("skipping %s in %s: hidden or lost+found, not part of the adapter", name, src)
    dest.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        partial = dest / f".{name}.partial"
        try:
            shutil.copyfile(path, partial)
            os.replace(partial, dest / name)
        except OSError as exc:
            raise CopyError(f"copying {path} to {dest}: {exc.strerror or exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
    LOG.info("copied %d files (%d bytes) from %s into %s", len(files), total, src, dest)
    return Copied(tuple(files), tuple(skipped), total)
