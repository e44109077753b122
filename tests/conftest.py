"""Root test configuration: the golden flag, hack/ on the import path, fixture plugins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "hack") not in sys.path:
    sys.path.insert(0, str(REPO / "hack"))

# Fixture plugins, each owned by the part it serves.
pytest_plugins = ["tests.support.cluster", "tests.support.registry"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
