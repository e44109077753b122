"""The demo's background processes: start detached, record, recognise, stop; nothing else.

Why: `make demo` leaves its background process (the simulated Karpenter; the operator
itself runs as pods) running, and `make down` must stop exactly that, even from another
shell, days later.
Each process is started in its own session (so its process group is its PID) and recorded
in `<demo dir>/procs.json` with its start time (from /proc/PID/stat); a recorded PID counts
as ours only while /proc shows the same start time, so a recycled PID is never signalled
(the command line is no proof: gunicorn rewrites its own).

It must not: signal a process it did not record (or that started at another time), delete a
network namespace it did not record, or touch the control plane's own files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Recorded:
    name: str
    pid: int
    argv: tuple[str, ...]
    log: str
    started: int = 0


class Registry:
    """procs.json under the demo's state dir: name -> Recorded."""

    def __init__(self, demo_dir: Path) -> None:
        self.demo_dir = demo_dir
        self.path = demo_dir / "procs.json"

    def load(self) -> dict[str, Recorded]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {
            k: Recorded(k, int(v["pid"]), tuple(v["argv"]), str(v["log"]), int(v.get("started", 0)))
            for k, v in raw.items()
        }

    def _save(self, entries: dict[str, Recorded]) -> None:
        self.demo_dir.mkdir(parents=True, exist_ok=True)
        data = {
            k: {"pid": r.pid, "argv": list(r.argv), "log": r.log, "started": r.started}
            for k, r in entries.items()
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)

    def start(
        self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None
    ) -> Recorded:
        """Start argv detached (own session), log to <demo dir>/logs/<name>.log, record it."""
        logs = self.demo_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=self.demo_dir,
            )
        rec = Recorded(name, proc.pid, tuple(argv), str(log), start_time(proc.pid) or 0)
        entries = self.load()
        entries[name] = rec
        self._save(entries)
        return rec

    def alive(self, name: str) -> Recorded | None:
        rec = self.load().get(name)
        return rec if rec is not None and is_same_process(rec) else None

    def stop_all(self, grace: float = 30.0) -> list[str]:
        """Stop every recorded process (newest first); return what was stopped."""
        stopped = []
        for rec in reversed(list(self.load().values())):
            if stop(rec, grace):
                stopped.append(f"{rec.name} (pid {rec.pid})")
        self.path.unlink(missing_ok=True)
        return stopped


def cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part) or None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]) if len(fields) > 19 else None


def is_same_process(rec: Recorded) -> bool:
    if rec.pid <= 1 or not rec.started:
        return False
    return start_time(rec.pid) == rec.started and not _is_zombie(rec.pid)


def stop(rec: Recorded, grace: float) -> bool:
    """SIGTERM the recorded process group, wait `grace` s, then SIGKILL; True if it ran."""
    if not is_same_process(rec):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(rec.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if cmdline(rec.pid) is None or _is_zombie(rec.pid):
                return True
            time.sleep(0.1)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def processes_under(directory: Path) -> list[int]:
    """PIDs whose working directory is inside `directory` (pod processes left by a killed agent)."""
    found = []
    root = directory.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if cwd == root or root in cwd.parents:
            found.append(int(entry.name))
    return found


def kill_pids(pids: Sequence[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        if sig == signal.SIGTERM:
            time.sleep(2.0)


def delete_netns(names: Sequence[str]) -> list[str]:
    """Kill what still runs in each recorded namespace, then delete it (its veth goes with it)."""
    deleted = []
    present = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    existing = {line.split()[0] for line in present.splitlines() if line.strip()}
    for name in names:
        if name not in existing:
            continue
        pids = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
        ).stdout.split()
        kill_pids([int(p) for p in pids if p.isdigit()])
        if (
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, check=False
            ).returncode
            == 0
        ):
            deleted.append(name)
    return deleted
