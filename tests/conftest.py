"""Root test configuration: the golden flag and the fixture plugins.

The rig (hack/rig) is the installed package `rig`; nothing here edits sys.path.
"""

from __future__ import annotations

import pytest

# Fixture plugins, each owned by the part it serves.
pytest_plugins = ["tests.support.cluster", "tests.support.registry",
                  "tests.support.hypothesis_report"]


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
