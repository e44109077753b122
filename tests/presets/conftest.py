"""Fixtures for the presets tests (the shipped catalog, loaded once)."""

from tests.presets.factories import catalog

__all__ = ["catalog"]
