"""Entry point of the model server: `python -m presets.runtime.server --model ... --port 5000`.

Why: pods run this. It parses the settings, checks what can be checked before forking
(model directory or preset, adapter directories), and runs gunicorn with ONE worker that
holds the model and gthread threads for concurrent streams.
What it must not do: touch torch in the gunicorn master (a forked child whose parent ran
multi-threaded torch ops hangs, so there is no preload: the worker builds the app and loads
the model), or do anything at import time.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from gunicorn.app.base import BaseApplication

from presets.runtime.loading import (
    ModelSourceError,
    cache_root,
    offline_environment,
    packaged_gguf,
)
from presets.runtime.settings import ServerSettings, SettingsError, parse_settings
from presets.runtime.settings import build_parser as build_parser  # the CLI's parser, for checks

# Exit code that makes the gunicorn master halt instead of respawning a worker forever.
WORKER_BOOT_ERROR = 3


def preflight(settings: ServerSettings) -> list[str]:
    """Problems visible without loading anything, so the process can exit with a clear reason."""
    problems: list[str] = []
    model = settings.model
    cached = cache_root(os.environ) / model / "config.json"
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            problems.append(f"--model {model}: the directory has no config.json")
    elif "/" in model or not cached.is_file():
        try:
            packaged_gguf(model)
        except ModelSourceError as exc:
            problems.append(str(exc))
    for a in settings.adapters:
        if not (a.path / "adapter_config.json").is_file():
            problems.append(f"--adapter {a.name}: {a.path} has no adapter_config.json")
    return problems


def _worker_load_failed() -> None:
    logging.getLogger("kaito.runtime").error("stopping: the model could not be loaded")
    os._exit(WORKER_BOOT_ERROR)


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": s.http_threads,
            "preload_app": False,
            "timeout": 120,
            "graceful_timeout": 10,
            "keepalive": 5,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": "info",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from presets.runtime.app import create_app

        return create_app(self.settings, on_load_failure=_worker_load_failed)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"kaito-model-server: {problem}", file=sys.stderr)
        return 2
    problems = preflight(settings)
    if problems:
        for problem in problems:
            print(f"kaito-model-server: {problem}", file=sys.stderr)
        return 2
    offline_environment(os.environ)
    _Gunicorn(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
