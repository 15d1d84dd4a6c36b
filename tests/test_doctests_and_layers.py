"""Docstring examples of streams/ and detectors/ run, and imports flow one way.

Layering (DESIGN.md): ``streams`` -> ``breakers`` -> ``detectors``. detectors imports
neither; breakers never imports streams or faust. (breakers' own doctests run in
tests/breakers/test_breakers_doctests.py.)
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import detectors
import streams

MODULES = sorted(
    m.name
    for pkg, prefix in ((streams, "streams."), (detectors, "detectors."))
    for m in pkgutil.walk_packages(pkg.__path__, prefix)
    if not m.name.endswith(".__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "detectors": r"(streams|breakers|faust|aiokafka|kafka|aiohttp|httpx)",
    "breakers": r"(streams|faust|aiokafka|kafka)",
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    pattern = re.compile(rf"^\s*(from|import)\s+{FORBIDDEN[package]}\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
