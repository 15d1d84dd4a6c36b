"""`tripwire drill --alertmanager` against a real Alertmanager fed by a real worker.

The worker pages Alertmanager itself (TRIPWIRE_ALERTMANAGER_URL); the drill must see the page
for its scope labelled ``drill="true"`` (alert_fired) and see it go away after its reset
(alert_resolved). Alertmanager routes it on to a webhook, so the test also checks what a
receiver gets: the drill label (the shipped routing sends drill="true" to a receiver that
never pages) and a resolved notification after the reset.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from breakers.operators import generate_token, hash_token
from helpers.e2e import WebhookSink, serve, start_alertmanager
from helpers.support import REPO, Topics, require_binary, start_worker, stop_process, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


def test_drill_sees_its_page_fire_and_resolve_in_a_real_alertmanager(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    token = generate_token()
    topics = Topics(f"drill-am-{uuid.uuid4().hex[:6]}")
    with serve(WebhookSink) as sink:
        sink.received = []  # type: ignore[attr-defined]
        am = start_alertmanager(binary, tmp_path / "am", f"http://127.0.0.1:{sink.server_address[1]}/hook")
        env = {"TRIPWIRE_ALERTMANAGER_URL": am.url,
               "TRIPWIRE_OPERATORS": json.dumps([{"name": "drill", "role": "admin", "token_sha256": hash_token(token)}])}
        w = start_worker(broker, tmp_path, topics, app_id=f"tw-{topics.prefix}", extra_env=env)
        try:
            argv = [sys.executable, "-m", "streams.cli", "drill", "--broker", broker.url, "--api", w.web,
                    "--alertmanager", am.url, "--token", token, "--traces-topic", topics.traces,
                    "--state-topic", topics.breaker_state, "--events-topic", topics.breaker_events,
                    "--report-dir", str(tmp_path / "reports")]
            run_env = {k: v for k, v in w.env.items() if k not in ("TRIPWIRE_OPERATORS", "TRIPWIRE_ALERTMANAGER_URL")}
            proc = subprocess.run(argv, cwd=tmp_path, env={**run_env, "PYTHONPATH": str(REPO)}, capture_output=True,
                                  text=True, timeout=240)
            assert proc.returncode == 0, proc.stdout + proc.stderr + w.log_tail()
            (report,) = sorted((tmp_path / "reports").glob("*.json"))
            doc = json.loads(report.read_text())
            steps = {s["name"]: s for s in doc["steps"]}
            assert doc["result"] == "pass", steps
            assert steps["alert_fired"]["status"] == "PASS" and steps["alert_resolved"]["status"] == "PASS"
            assert steps["alert_fired"]["seconds"] is not None
            scope = doc["scope"]

            def notifications(status: str) -> list[dict]:  # type: ignore[type-arg]
                return [a for _, n in sink.received for a in n.get("alerts", [])  # type: ignore[attr-defined]
                        if a["labels"].get("scope") == scope and a["status"] == status]

            fired = wait_for(lambda: notifications("firing"), 30, "the drill page at the receiver")
            assert all(a["labels"]["drill"] == "true" for a in fired), fired
            wait_for(lambda: notifications("resolved"), 60, "the resolved notification after the drill's reset")
        finally:
            stop_process(w.proc)  # type: ignore[arg-type]
            stop_process(am.proc)
