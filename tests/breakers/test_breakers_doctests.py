"""Run the docstring examples of every breakers module."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import breakers

MODULES = sorted(m.name for m in pkgutil.iter_modules(breakers.__path__, "breakers."))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0


def test_no_forbidden_imports():
    import pathlib
    import re

    pat = re.compile(r"^\s*(from|import)\s+(streams|faust|aiokafka|kafka)\b", re.M)
    for path in pathlib.Path(breakers.__file__).parent.glob("*.py"):
        assert not pat.search(path.read_text()), path
