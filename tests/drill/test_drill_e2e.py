"""Drills against a real stack: a Tansu broker and a real `tripwire worker` with an admin token."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from helpers.support import REPO, Topics, consume_all, start_worker, wait_for

from breakers.operators import generate_token, hash_token
from streams.ops.procutil import free_port, stop_process
from streams.kafka.producer import TraceProducer

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

TOKEN = generate_token()


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One worker for the module, with its own topics and an admin operator."""
    tmp = tmp_path_factory.mktemp("drill")
    topics = Topics(f"drill-{uuid.uuid4().hex[:6]}")
    env = {"TRIPWIRE_OPERATORS": json.dumps([{"name": "drill-test", "role": "admin",
                                             "token_sha256": hash_token(TOKEN)}])}
    w = start_worker(broker, tmp, topics, app_id=f"tw-{topics.prefix}", extra_env=env)
    yield broker, w, tmp
    stop_process(w.proc)


def run_drill(broker, w, cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    t = w.topics
    argv = [sys.executable, "-m", "streams.cli", "drill", "--broker", broker.url, "--api", w.web,
            "--traces-topic", t.traces, "--state-topic", t.breaker_state, "--events-topic", t.breaker_events,
            "--report-dir", str(cwd / "reports"), *args]
    env = {k: v for k, v in w.env.items() if k != "TRIPWIRE_OPERATORS"}
    env.pop("TRIPWIRE_TOKEN", None)
    return subprocess.run(argv, cwd=cwd, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=timeout)


def report(cwd: Path) -> dict:  # type: ignore[type-arg]
    files = sorted((cwd / "reports").glob("*.json"))
    assert len(files) == 1, files
    assert files[0].with_suffix(".md").exists()
    return json.loads(files[0].read_text())


def test_drill_passes_and_is_reported(stack, tmp_path: Path) -> None:
    broker, w, _ = stack
    proc = run_drill(broker, w, tmp_path, "--token", TOKEN)
    assert proc.returncode == 0, proc.stdout + proc.stderr + w.log_tail()
    doc = report(tmp_path)
    steps = {s["name"]: s for s in doc["steps"]}
    assert doc["result"] == "pass" and doc["agent"].startswith("drill-bot-")
    for name in ("detection", "breaker_open", "authz_deny", "reset", "closed", "authz_allow", "stays_closed"):
        assert steps[name]["status"] == "PASS", steps[name]
        assert steps[name]["seconds"] is not None
    assert steps["alert_fired"]["status"] == "SKIPPED" and steps["alert_resolved"]["status"] == "SKIPPED"
    assert steps["breaker_open"]["seconds"] <= 10 and steps["authz_deny"]["seconds"] <= 1
    assert doc["reported"] == {"breaker_events": "ok", "api": "ok"}
    assert doc["targets"]["observed_via"] == "breaker-state topic"
    # the worker exports the result, and the audit log holds it
    assert wait_for(lambda: w.metric("tripwire_drill_runs_total", result="pass") >= 1, 20, "drill metric")
    assert w.metric("tripwire_drill_last_success_timestamp_seconds") >= doc["started_at"]
    recs = consume_all(broker.bootstrap, w.topics.breaker_events, expect=10_000, timeout=5)
    results = [json.loads(r.value) for r in recs if r.key == b"drill"]
    assert [r["drill_id"] for r in results if r.get("type") == "drill_result"] == [doc["drill_id"]]
    # the drill scope is closed again and authz allows
    r = httpx.get(f"{w.web}/v1/authz", headers={"X-Agent-Id": doc["agent"], "X-Tool": "shell"})
    assert r.status_code == 200


def test_broken_setup_fails_naming_the_step(stack, tmp_path: Path) -> None:
    broker, w, _ = stack
    nowhere = f"http://127.0.0.1:{free_port()}"
    closed_am = f"http://127.0.0.1:{free_port()}"
    proc = run_drill(broker, w, tmp_path, "--token", TOKEN, "--api", nowhere, "--alertmanager", closed_am,
                     "--slo-alert", "1", "--grace", "1", "--slo-recovery", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "drill FAILED at: authz_deny, alert_fired" in proc.stdout.replace("\n", " ")
    doc = report(tmp_path)
    steps = {s["name"]: s for s in doc["steps"]}
    assert doc["result"] == "fail"
    assert steps["breaker_open"]["status"] == "PASS"  # the breaker itself worked (seen on breaker-state)
    assert steps["authz_deny"]["status"] == "FAIL" and "did not answer" in steps["authz_deny"]["detail"]
    assert steps["alert_fired"]["status"] == "FAIL" and "timed out" in steps["alert_fired"]["detail"]
    assert steps["reset"]["status"] == "FAIL"
    assert wait_for(lambda: w.metric("tripwire_drill_runs_total", result="fail") >= 1, 20, "fail metric via topic")


def test_drill_leaves_other_scopes_untouched(stack, tmp_path: Path) -> None:
    broker, w, _ = stack
    agent = f"prod-{uuid.uuid4().hex[:6]}"
    producer = TraceProducer(broker.bootstrap, w.topics.traces)
    now = time.time()
    producer.send_batch(agent, [{"schema_version": "1", "event_id": f"{agent}-{i}", "ts": int(now * 1000),
                                 "agent_id": agent, "kind": "tool_call", "tool": "shell", "status": "ok"}
                                for i in range(30)])
    producer.close()

    def prod_rows() -> str:
        return "\n".join(sorted(line for line in w.metrics_text().splitlines() if f'agent="{agent}"' in line))

    wait_for(lambda: 'tool="shell"' in prod_rows(), 30, "the production agent's counts")
    before = prod_rows()
    breakers_before = httpx.get(f"{w.web}/v1/breakers", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    proc = run_drill(broker, w, tmp_path, "--token", TOKEN, "--profile", "incident-burst")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    drill_agent = report(tmp_path)["agent"]
    assert prod_rows() == before
    after = httpx.get(f"{w.web}/v1/breakers", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    others = lambda doc: {b["scope"]: b["state"] for b in doc["breakers"] if drill_agent not in b["scope"]}  # noqa: E731
    assert others(after) == others(breakers_before)
    r = httpx.get(f"{w.web}/v1/authz", headers={"X-Agent-Id": agent, "X-Tool": "shell"})
    assert r.status_code == 200 and r.headers["X-Tripwire-State"] == "closed"
