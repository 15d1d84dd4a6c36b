"""detectors/ imports no stream/breaker/Kafka/HTTP code; doctests run."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "detectors"
FORBIDDEN = {"streams", "breakers", "faust", "aiokafka", "kafka", "requests", "httpx", "aiohttp", "urllib3", "http", "urllib"}


def test_no_forbidden_imports_static():
    for py in PKG.glob("*.py"):
        tree = ast.parse(py.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] not in FORBIDDEN, (py.name, n)


def test_import_does_not_load_forbidden_modules():
    code = (
        "import sys, detectors\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in %r]\n"
        "assert not bad, bad\n" % (sorted(FORBIDDEN - {"http", "urllib"}),)
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent)


def test_doctests():
    pytest.importorskip("doctest")
    import doctest
    import importlib

    failed = 0
    for py in sorted(PKG.glob("*.py")):
        mod = importlib.import_module(f"detectors.{py.stem}" if py.stem != "__init__" else "detectors")
        failed += doctest.testmod(mod).failed
    assert failed == 0
