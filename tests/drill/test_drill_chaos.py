"""Chaos drill: two embedded workers, the drill agent's owner is SIGKILLed after the spike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


def test_kill_worker_drill_passes_through_the_survivor(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "streams.cli", "drill", "--embedded", "--kill-worker",
            "--report-dir", str(tmp_path / "reports")]
    proc = subprocess.run(argv, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=400)
    doc = json.loads(next((tmp_path / "reports").glob("*.json")).read_text())
    assert proc.returncode == 0, json.dumps(doc["steps"], indent=1) + proc.stderr
    chaos = doc["chaos"]["kill_worker"]
    assert doc["result"] == "pass"
    assert chaos["owned_drill_agent"] and chaos["killed"] != chaos["survivor"]
    assert doc["targets"]["api"] == chaos["survivor"]
    assert "failover_s" in chaos, chaos
