"""The skip-or-fail rule for missing binaries."""

from __future__ import annotations

import pytest
from _pytest.outcomes import Failed, Skipped

from .conftest import on_ci, require_binary


def test_found_binary_returns_path(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert require_binary("sh").endswith("/sh")


def test_missing_binary_skips_off_ci(monkeypatch):
    monkeypatch.setenv("CI", "false")
    with pytest.raises(Skipped, match="not found on PATH"):
        require_binary("tripwire-no-such-binary")


@pytest.mark.parametrize("value", ["true", "TRUE", "True"])
def test_missing_binary_fails_on_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    assert on_ci()
    with pytest.raises(Failed, match="CI=true"):
        require_binary("tripwire-no-such-binary")


def test_first_alternative_found(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert require_binary("tripwire-no-such-binary", "sh").endswith("/sh")
