"""Fixtures of the drill tests (the shared ones come from tests/support.py)."""

from helpers.support import broker, isolated_topics, worker  # noqa: F401 - pytest fixtures
