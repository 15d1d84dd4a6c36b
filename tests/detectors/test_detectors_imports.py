"""Importing detectors/ loads no stream, breaker, Kafka or HTTP code.

The static rule (what each part may import, including lazy and type-only imports) is the table in
tests/test_doctests_and_layers.py; detectors' doctests run through ``--doctest-modules``. This test
checks what a fresh interpreter actually loads.
"""

import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "detectors"
FORBIDDEN = {"streams", "breakers", "faust", "aiokafka", "kafka", "requests", "httpx", "aiohttp", "urllib3"}


def test_import_does_not_load_forbidden_modules():
    code = (
        "import sys, detectors\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in %r]\n"
        "assert not bad, bad\n" % (sorted(FORBIDDEN),)
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent)
