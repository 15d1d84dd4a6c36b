"""Monitor (the decision core, no Kafka): trips, operator resets, evaluation pacing."""

from __future__ import annotations

import time

import pytest

from breakers.policy import load_policy
from breakers.state_machine import reset
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.contract.schema import TraceEvent
from streams.settings import DEFAULT_POLICY


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _events(agent: str, t: float, calls: int, incidents: int, start: int = 0) -> list[TraceEvent]:
    evs = [{"schema_version": "1", "event_id": f"{agent}-{start + i}", "ts": int(t * 1000), "agent_id": agent,
            "kind": "tool_call", "tool": "shell", "status": "ok"} for i in range(calls)]
    evs += [{"schema_version": "1", "event_id": f"{agent}-x{start + i}", "ts": int(t * 1000), "agent_id": agent,
             "kind": "incident", "tool": "shell", "severity": "critical"} for i in range(incidents)]
    return [TraceEvent.model_validate(e) for e in evs]


@pytest.fixture
def setup() -> tuple[Monitor, Wall]:
    wall = Wall(time.time())
    return Monitor(load_policy(DEFAULT_POLICY), clock=EventClock(wall=wall)), wall


def _tick(mon: Monitor, wall: Wall, dt: float = 6.0) -> None:
    wall.t += dt
    mon.evaluate(wall.t)


def test_critical_incidents_open_the_agent_scope(setup) -> None:
    mon, wall = setup
    mon.ingest(0, _events("a", wall.t, 220, 12))
    _tick(mon, wall)
    assert mon.states["agent:a"].state == "open"
    assert "critical" in mon.states["agent:a"].reason


def test_operator_reset_is_not_undone_by_the_evidence_it_reviewed(setup) -> None:
    mon, wall = setup
    mon.ingest(0, _events("a", wall.t, 220, 12))
    _tick(mon, wall)
    st = mon.states["agent:a"]
    new, _ = reset(st, "ann", "root cause fixed", mon.clock.now(), st.policy_version)
    mon.note_reset("agent:a", mon.clock.now())
    mon.states["agent:a"] = new
    mon.ingest(0, _events("a", wall.t, 30, 0, start=1000))  # good calls re-evaluate the scope
    _tick(mon, wall)
    _tick(mon, wall)
    assert mon.states["agent:a"].state == "closed"
    # fresh harm after the reset trips it again
    mon.ingest(0, _events("a", wall.t, 220, 12, start=2000))
    _tick(mon, wall)
    assert mon.states["agent:a"].state == "open"


def test_without_the_reset_baseline_the_old_evidence_retrips(setup) -> None:
    """The control for the test above: the baseline is what keeps the reset."""
    mon, wall = setup
    mon.ingest(0, _events("a", wall.t, 220, 12))
    _tick(mon, wall)
    st = mon.states["agent:a"]
    mon.states["agent:a"], _ = reset(st, "ann", "no baseline", mon.clock.now(), st.policy_version)
    mon.ingest(0, _events("a", wall.t, 30, 0, start=1000))
    _tick(mon, wall)
    assert mon.states["agent:a"].state == "open"


def test_hot_scopes_are_evaluated_at_most_once_per_hot_interval(setup) -> None:
    mon, wall = setup
    mon.ingest(0, _events("a", wall.t, 50, 1))
    wall.t += 0.25
    mon.evaluate(wall.t)
    first = mon.pacing.evaluated_at["agent:a"]
    mon.ingest(0, _events("a", wall.t, 5, 1, start=500))
    wall.t += 0.25
    mon.evaluate(wall.t)
    assert mon.pacing.evaluated_at["agent:a"] == first  # deferred, not dropped
    assert "agent:a" in mon.pacing.urgent
    wall.t += 1.0
    mon.evaluate(wall.t)
    assert mon.pacing.evaluated_at["agent:a"] > first


def test_calm_traffic_never_leaves_closed(setup) -> None:
    mon, wall = setup
    for k in range(10):
        mon.ingest(0, _events("calm", wall.t, 500, 0, start=k * 1000))
        _tick(mon, wall)
    assert "agent:calm" not in mon.states or mon.states["agent:calm"].state == "closed"


def test_metric_labels_are_bounded_past_the_cap(setup) -> None:
    """Past max_agents, agents report together as `other`; the scrape cost is bounded by the caps."""
    from streams.settings import Settings
    from streams.worker.views import monitor_families

    wall = setup[1]
    mon = Monitor(load_policy(DEFAULT_POLICY), clock=EventClock(wall=wall), max_agents=3, max_tools=2)
    for i in range(10):
        evs = _events(f"agent-{i}", wall.t, 20, 0)
        flag = {"schema_version": "1", "event_id": f"f{i}", "ts": int(wall.t * 1000), "agent_id": f"agent-{i}",
                "kind": "monitor_flag", "tool": "shell", "severity": "low"}
        mon.ingest(0, evs + [TraceEvent.model_validate(flag)])
    fams = {f.name: f for f in monitor_families(mon, Settings(max_agents=3, max_tools=2))}
    agents = {s.labels["agent"] for s in fams["tripwire_near_miss_rate"].samples}
    assert agents == {"agent-0", "agent-1", "agent-2", "other"}
    other = [s for s in fams["tripwire_near_miss_rate"].samples
             if s.labels["agent"] == "other" and s.labels["window"] == "5m"]
    assert [round(s.value, 4) for s in other] == [round(7 / 140, 4)]  # 7 agents: 7 flags / 140 calls


def test_evaluation_respects_its_cpu_budget_and_catches_up(setup) -> None:
    mon, wall = setup
    for i in range(300):
        mon.ingest(0, _events(f"a{i}", wall.t, 3, 1))
    mon.tuning.eval_budget_s = 0.0  # nothing fits: everything is deferred, nothing is lost
    mon.evaluate(wall.t + 0.25)
    assert mon.pacing.deferred > 0 and len(mon.pacing.urgent) >= 300
    mon.tuning.eval_budget_s = 10.0
    mon.evaluate(wall.t + 0.5)
    assert {f"agent:a{i}" for i in range(300)} <= set(mon.pacing.evaluated_at)


def test_a_scope_whose_evaluation_raises_is_skipped_counted_and_logged_once(setup, monkeypatch, caplog) -> None:
    """One failing scope never stops the loop: the other agent still trips."""
    import streams.engine.monitor as monitor_module

    mon, wall = setup
    real = monitor_module.evaluate

    def evaluate(policy, scope, reader, **kwargs):
        if "poison" in scope:
            raise RuntimeError("boom\nforged log line")
        return real(policy, scope, reader, **kwargs)

    monkeypatch.setattr(monitor_module, "evaluate", evaluate)
    mon.ingest(0, _events("poison", wall.t, 220, 12) + _events("a", wall.t, 220, 12))
    with caplog.at_level("ERROR", logger="tripwire.monitor"):
        _tick(mon, wall)
        _tick(mon, wall, 2.0)
    assert mon.states["agent:a"].state == "open"
    assert mon.evaluation_errors >= 2  # the agent scope and its tool scope, on each tick
    failures = [r for r in caplog.records if "evaluating" in r.getMessage()]
    assert len(failures) == 2  # once per scope, not per tick
    assert all("\n" not in r.getMessage() for r in failures)  # the message is escaped


def test_an_event_whose_update_raises_costs_only_itself(setup, monkeypatch) -> None:
    mon, wall = setup
    events = _events("a", wall.t, 5, 0)
    real = mon._ingest_one

    def ingest_one(partition, ev, *rest):
        if ev.event_id == "a-2":
            raise ValueError("bad")
        real(partition, ev, *rest)

    monkeypatch.setattr(mon, "_ingest_one", ingest_one)
    mon.ingest(0, events)
    assert mon.evaluation_errors == 1
    assert mon.agents["a"].tools["shell"].window_counts(300, wall.t)["tool_calls"] == 4


def test_a_future_dated_breaker_state_record_cannot_override_an_operator(setup) -> None:
    """Newest ``updated_at`` wins: a forged record dated next year would beat every later decision."""
    import orjson

    from breakers.state_machine import BreakerState, force_open

    mon, wall = setup
    now = time.time()
    forced, _ = force_open(BreakerState.initial("agent:a", now, mon.policy), "ann", "kill switch", now)
    mon.apply_remote(orjson.dumps(forced.to_dict()), b"agent:a")
    forged = {**forced.to_dict(), "state": "closed", "actor": "mallory", "updated_at": now + 365 * 86400}
    mon.apply_remote(orjson.dumps(forged), b"agent:a")
    mon.apply_remote(orjson.dumps({**forged, "updated_at": float("nan")}), b"agent:a")
    assert mon.states["agent:a"].state == "forced_open"
    assert mon.ignored_remote_states["future_updated_at"] == 1
    assert mon.ignored_remote_states["malformed"] == 1  # NaN goes over the wire as null
    skewed = {**forced.to_dict(), "reason": "a worker's clock 60 s ahead", "updated_at": now + 60}
    mon.apply_remote(orjson.dumps(skewed), b"agent:a")  # within the allowed skew: applied
    assert mon.states["agent:a"].reason == "a worker's clock 60 s ahead"
