"""Fixtures for the webhook tests: the catalog, and a REAL `kaito webhook serve` (gunicorn, TLS).

The server itself (start, stop, registration) lives in tests/support/webhook.py, shared with
the end-to-end tier; this module only scopes it for the webhook tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from presets.catalog import Catalog, load_catalog
from tests.support.webhook import Server, start_server, stop_server


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real gunicorn over TLS for the session's webhook tests."""
    base = tmp_path_factory.mktemp("webhook")
    running = start_server(base / "certs", base / "server.log", "--threads", "4")
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def https(server: Server) -> Iterator[requests.Session]:
    with server.session() as session:
        yield session
