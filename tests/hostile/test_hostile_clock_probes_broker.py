"""Issue #15 (2) and (4) on the real broker and worker: a forged future timestamp shields no agent and
moves no decision time; forged (unsigned) good traffic does not close a half-open breaker.

The unit tests (test_hostile_clock_unit.py, test_hostile_probes_unit.py) attack each rule on the
Monitor; these check that the worker wires them: the trace topic -> pipeline -> Monitor (attested
or not) -> breaker-state and ``/v1/authz``.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from helpers.hostile import alive_or_fail, authz, calls, event, run_tag, tripping_burst, wait_worker
from helpers.support import WorkerProc
from streams.kafka.producer import TraceProducer

pytestmark = pytest.mark.broker


def _breaker(w: WorkerProc, scope: str) -> dict[str, Any] | None:
    r = httpx.get(f"{w.web}/v1/breakers/{quote(scope, safe='')}", timeout=5)
    return r.json() if r.status_code == 200 else None


def test_a_future_dated_event_shields_no_agent_and_moves_no_decision_time(broker: Any, worker: WorkerProc) -> None:
    w = worker
    run = run_tag()
    victim, edge, control = f"clk-victim-{run}", f"clk-edge-{run}", f"clk-control-{run}"
    p = TraceProducer(broker.bootstrap, w.topics.traces)
    try:
        p.send_batch(victim, [event(victim, ts=int((time.time() + 23 * 3600) * 1000))])  # +23 h
        p.send_batch(edge, [event(edge, ts=int((time.time() + 250) * 1000))])  # within the pipeline's skew
        for agent in (victim, edge, control):
            p.send_batch(agent, tripping_burst(agent))
    finally:
        p.close()
    for agent in (control, victim, edge):
        wait_worker(w, lambda a=agent: authz(w, a, "shell").status_code == 403, 30, f"the breaker of {agent} opened")
    # decisions carry the wall clock's time, not one pulled ahead by a future event
    for agent in (victim, edge, control):
        st = _breaker(w, f"agent:{agent}")
        assert st is not None and st["since"] <= time.time() + 5, (agent, st and st["since"] - time.time())
    alive_or_fail(w, "after future-dated events")


def _half_open_record(scope: str, now: float) -> bytes:
    """A half-open state as the worker's own step() writes it after a cool-down (5 probe slots, none issued)."""
    return orjson.dumps({"scope": scope, "state": "half_open", "since": now, "updated_at": now, "reason": "cool-down over",
                         "budget": "critical-incidents", "actor": "tripwire", "cooldown_s": 300.0, "open_count": 1,
                         "probes_required": 5, "probes_remaining": 5, "probes_ok": 0, "probe_deadline": now + 600,
                         "schema": 1})


def test_forged_good_calls_do_not_close_a_half_open_breaker(broker: Any, worker: WorkerProc) -> None:
    w = worker
    run = run_tag()
    agent = f"probe-{run}"
    scope = f"agent:{agent}"
    p = TraceProducer(broker.bootstrap, w.topics.traces)
    p.send_batch(agent, calls(agent, 3))  # the worker holds the agent (it decides its scopes)
    p.flush()
    wait_worker(w, lambda: w.metric("tripwire_events_total", kind="tool_call") >= 3, 30, "the agent's first calls")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        producer.send(w.topics.breaker_state, key=scope.encode(), value=_half_open_record(scope, time.time()))
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)
    wait_worker(w, lambda: (_breaker(w, scope) or {}).get("state") == "half_open", 30, "the half-open state read")
    assert authz(w, agent, "shell").status_code == 200  # one probe admitted: one slot issued
    try:
        p.send_batch(agent, calls(agent, 40))  # 40 forged, unsigned good calls
    finally:
        p.close()

    def settled() -> bool:
        st = _breaker(w, scope) or {}
        return st.get("state") != "half_open" or w.metric("tripwire_probe_results_ignored_total") >= 39

    wait_worker(w, settled, 30, "the forged calls seen")
    time.sleep(1.5)  # a few evaluation ticks over the forged results
    st = _breaker(w, scope) or {}
    assert st.get("state") == "half_open" and st.get("probes_ok", 0) == 0, st
    assert w.metric("tripwire_probe_results_ignored_total", reason="unattested") >= 40
    alive_or_fail(w, "after forged probe results")
