"""Entry point of the model server: `python -m runtime.serving.server --model ... --port 5000`.

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

from runtime.serving.loading import prepare_environment, weights_settings
from runtime.serving.settings import ServerSettings, SettingsError, parse_settings
from runtime.serving.settings import build_parser as build_parser  # the CLI's parser, for checks
from runtime.weights import WeightsError, is_local, parse_source
from runtime.weights.packaged import packaged_gguf

# Exit code that makes the gunicorn master halt instead of respawning a worker forever.
WORKER_BOOT_ERROR = 3


def preflight(settings: ServerSettings) -> list[str]:
    """Problems visible without loading or fetching anything, so the process can exit with a
    clear reason (a Hub or registry model is fetched by the worker, with progress lines)."""
    problems: list[str] = []
    weights = weights_settings(os.environ)
    try:
        source = parse_source(settings.model, settings.revision)
        if source.route == "directory" and not os.path.isfile(
            os.path.join(source.ref, "config.json")
        ):
            problems.append(f"--model {settings.model}: the directory has no config.json")
        elif source.route == "preset" and not is_local(source, weights):
            packaged_gguf(source.ref)
        elif weights.offline and not is_local(source, weights):
            problems.append(f"--model {source}: KAITO_WEIGHTS_OFFLINE=1 and the weights are "
                            f"not in the node cache {weights.cache}")
    except WeightsError as exc:
        problems.append(exc.detail)
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
        from runtime.serving.app import create_app

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
    local = is_local(parse_source(settings.model, settings.revision), weights_settings(os.environ))
    prepare_environment(os.environ, weights_local=local)
    _Gunicorn(settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
