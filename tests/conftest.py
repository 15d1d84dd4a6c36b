"""Shared fixtures (see ``support.py`` for the helpers they use)."""

from pathlib import Path

from helpers.support import broker, isolated_topics, worker  # noqa: F401 - pytest fixtures


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """``--doctest-modules`` (pyproject) is for the packages: here only ``test_*.py`` modules are collected,
    so conftests and helper modules are not imported a second time as doctest modules."""
    name = collection_path.name
    if collection_path.suffix == ".py" and not name.startswith("test_") and name != "__init__.py":
        return True
    return None
