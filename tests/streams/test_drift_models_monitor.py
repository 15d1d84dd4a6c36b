"""The monitor's performance drift and model changes (no Kafka): reports, records, metrics, checkpoints."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from breakers.policy import load_policy
from streams.contract.schema import TraceEvent
from streams.engine.agent_state import decode_checkpoint, encode_checkpoint
from streams.engine.clock import EventClock
from streams.engine.monitor import MODEL_CHANGE, Monitor
from streams.settings import DEFAULT_POLICY, Settings
from streams.worker.views import monitor_families

#: 200 outcomes at 90 % (every 10th fails), then 200 alternating: the fixed input of docs/metrics.md
DROP = [0 if i % 10 == 9 else 1 for i in range(200)] + [(i + 1) % 2 for i in range(200)]


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ev(agent: str, i: int, ts: float, kind: str, **kw: Any) -> TraceEvent:
    return TraceEvent.model_validate({"schema_version": "1", "event_id": f"{agent}-{kind}-{i}",
                                      "ts": int(ts * 1000), "agent_id": agent, "kind": kind, **kw})


def outcomes(agent: str, bits: list[int], t0: float, model: str | None = None) -> list[TraceEvent]:
    extra = {"model": model} if model else {}
    return [ev(agent, i, t0 + i * 0.01, "task_outcome", outcome="success" if b else "failure", task_id=f"t{i}",
               attempt=1, **extra) for i, b in enumerate(bits)]


def llm_calls(agent: str, model: str, n: int, t0: float, start: int = 0, latency: float = 800.0) -> list[TraceEvent]:
    return [ev(agent, start + i, t0 + i * 0.01, "llm_call", model=model, latency_ms=latency, input_tokens=100,
               output_tokens=50) for i in range(n)]


@pytest.fixture
def mon() -> Monitor:
    wall = Wall(time.time())
    return Monitor(load_policy(DEFAULT_POLICY), clock=EventClock(wall=wall))


def families(mon: Monitor) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in monitor_families(mon, Settings()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_task_success_drop_is_one_drift_report_and_metric(mon: Monitor) -> None:
    t0 = mon.clock.now() - 100
    mon.ingest(0, outcomes("perf", DROP, t0))
    reports = mon.take_drift_reports()
    assert [(a, r.signal, r.before, r.after, r.detail, r.ts) for a, r in reports] == [
        ("perf", "task_success", 0.9, 0.62, "90/100 -> 31/50", pytest.approx(t0 + 233 * 0.01, abs=1e-3))]
    drift = families(mon)["tripwire_drift_detected_total"]
    assert drift == [({"agent": "perf", "signal": "task_success"}, 1.0)]
    assert mon.agents["perf"].last_drift_ts == reports[0][1].ts  # feeds `signal: drift` budgets


def test_model_swap_is_recorded_restarts_drift_and_compares_on_return(mon: Monitor) -> None:
    t0 = mon.clock.now() - 100
    a = "swapper"
    mon.ingest(0, llm_calls(a, "gpt-4o", 40, t0) + outcomes(a, [1] * 60, t0 + 1, model="gpt-4o"))
    assert mon.model_changes_total[a] == 0 and not mon.model_changes  # the first model is no change
    before = mon.agents[a].drift.levels()
    assert before["task_success"] == 1.0 and before["llm_latency_ms"] == pytest.approx(800.0)
    swap = llm_calls(a, "gpt-4o-mini", 5, t0 + 2, start=100, latency=200.0)
    mon.ingest(0, swap)
    rec = mon.model_changes.popleft()
    assert rec == {"type": MODEL_CHANGE, "agent": a, "from": "gpt-4o", "to": "gpt-4o-mini", "ts": swap[0].ts,
                   "before": before, "after": None}
    st = mon.agents[a]
    assert st.drift.level("task_success") is None  # restarted on the new model
    assert st.drift.level("llm_latency_ms") == pytest.approx(200.0)  # 3rd..5th calls of the new model
    assert mon.agents[a].models.current == "gpt-4o-mini"
    mon.ingest(0, llm_calls(a, "gpt-4o", 3, t0 + 3, start=200))  # back to gpt-4o: compared with its old levels
    back = mon.model_changes.popleft()
    assert (back["from"], back["to"], back["after"]) == ("gpt-4o-mini", "gpt-4o", before)
    assert back["before"]["llm_latency_ms"] == pytest.approx(200.0)
    assert families(mon)["tripwire_model_changes_total"] == [({"agent": a}, 2.0)]


def test_checkpoints_keep_the_model_and_old_checkpoints_restore(mon: Monitor) -> None:
    t0 = mon.clock.now() - 100
    mon.ingest(0, llm_calls("ck", "m1", 5, t0) + outcomes("ck", DROP[:120], t0 + 1))
    [(_, key, value)] = mon.checkpoint()
    state = decode_checkpoint(value)
    other = Monitor(load_policy(DEFAULT_POLICY), clock=mon.clock)
    other.restore(key, value)
    st = other.agents["ck"]
    assert st.models.current == "m1" and st.drift.to_state() == mon.agents["ck"].drift.to_state()
    # a checkpoint written before model tracking and task-success drift (the fields did not exist)
    old = {k: v for k, v in state.items() if k != "models"}
    old["drift"] = {k: v for k, v in state["drift"].items() if k != "success"}
    third = Monitor(load_policy(DEFAULT_POLICY), clock=mon.clock)
    third.restore(key, encode_checkpoint(old))
    st = third.agents["ck"]
    assert st.models.current is None and st.drift.level("task_success") is None
    assert st.counts.to_state() == mon.agents["ck"].counts.to_state()
    third.ingest(0, llm_calls("ck", "m2", 3, t0 + 2, start=50))
    assert not third.model_changes and st.models.current == "m2"  # first model named after restore: no change
    assert orjson.loads(orjson.dumps(st.to_state()))["models"]["current"] == "m2"
