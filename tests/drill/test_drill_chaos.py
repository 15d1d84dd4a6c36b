"""Chaos drill: two embedded workers, the drill agent's owner is SIGKILLed after the spike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.support import REPO

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


def test_restart_broker_drill_keeps_denying_through_the_outage(tmp_path: Path) -> None:
    """The memory-only broker is killed and restarted mid-drill: authz keeps denying from the last
    known state, /readyz reports the outage, the worker reconnects by itself and recovery works."""
    argv = [sys.executable, "-m", "streams.cli", "drill", "--embedded", "--restart-broker",
            "--report-dir", str(tmp_path / "reports")]
    proc = subprocess.run(argv, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=400)
    doc = json.loads(next((tmp_path / "reports").glob("*.json")).read_text())
    assert proc.returncode == 0, json.dumps(doc["steps"], indent=1) + proc.stderr
    chaos = doc["chaos"]["restart_broker"]
    assert chaos["authz_during"] == [403] and chaos["authz_after"] == 403
    assert chaos["readyz_reported_outage"] is True and chaos["ready_after_s"] is not None
    steps = {s["name"]: s["status"] for s in doc["steps"]}
    assert steps["broker_restart"] == "PASS" and steps["authz_allow"] == "PASS"


def test_chaos_flags_need_the_embedded_stack() -> None:
    from click.testing import CliRunner

    from streams.cli.main import main

    for flag in ("--kill-worker", "--restart-broker"):
        result = CliRunner().invoke(main, ["drill", flag])
        assert result.exit_code == 2 and "--embedded" in result.output
