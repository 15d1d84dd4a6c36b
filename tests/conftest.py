"""Shared fixtures (see ``support.py`` for the helpers they use)."""

from support import broker, isolated_topics, worker  # noqa: F401 - pytest fixtures
