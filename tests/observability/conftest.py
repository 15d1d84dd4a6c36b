"""Shared helpers for the observability config tests (Prometheus, Alertmanager, Grafana).

Tests that need an external binary (promtool, amtool, prometheus, prometheus-alertmanager) call
``require_binary(name)``: it returns the binary's path, or skips the test with a clear reason when it
is missing — except on CI (env ``CI=true``), where a missing binary is a failure, so a broken CI
image cannot turn the whole suite green by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
AM_DIR = REPO / "deploy" / "alertmanager"
GRAFANA_DIR = REPO / "grafana"
DOCS_DIR = REPO / "docs"

# Debian package that provides each binary, for the skip/fail message.
_PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "alertmanager": "prometheus-alertmanager",
}


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_binary(*names: str) -> str:
    """Path of the first of ``names`` found on PATH; skip (or fail when CI=true) if none is."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pkg = _PACKAGES.get(names[0], names[0])
    reason = (
        f"{' / '.join(names)} not found on PATH "
        f"(install the Debian package `{pkg}`, e.g. `apt-get install {pkg}`)"
    )
    if on_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command, capture text output; never raises on a non-zero exit."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture
def amtool() -> str:
    return require_binary("amtool")
