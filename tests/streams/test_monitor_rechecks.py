"""Breakers not closed are evaluated when something can change (:mod:`streams.engine.rechecks`), never later.

The engine no longer evaluates every breaker that is not closed on every tick. These tests attack the
places where skipping could leave a breaker stuck: timers with no events (cool-down → half-open,
escalation clearing), states written from outside an evaluation (operators, other workers), and an
agent whose state reaches this worker after its breaker state did. Each compares with the old rule
(``EngineTuning.evaluate_unchanged``) where it applies.
"""

from __future__ import annotations

import math
import time

import pytest

from breakers.policy import load_policy
from breakers.state_machine import BreakerState
from streams.contract.schema import TraceEvent
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.engine.tuning import EngineTuning
from streams.settings import DEFAULT_POLICY


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _events(agent: str, t: float, calls: int, incidents: int = 0, flags: int = 0, start: int = 0,
            tool: str = "shell") -> list[TraceEvent]:
    evs = [{"schema_version": "1", "event_id": f"{agent}-{start + i}", "ts": int(t * 1000), "agent_id": agent,
            "kind": "tool_call", "tool": tool, "status": "ok"} for i in range(calls)]
    evs += [{"schema_version": "1", "event_id": f"{agent}-x{start + i}", "ts": int(t * 1000), "agent_id": agent,
             "kind": "incident", "tool": tool, "severity": "critical"} for i in range(incidents)]
    evs += [{"schema_version": "1", "event_id": f"{agent}-f{start + i}", "ts": int(t * 1000), "agent_id": agent,
             "kind": "monitor_flag", "tool": tool, "severity": "high"} for i in range(flags)]
    return [TraceEvent.model_validate(e) for e in evs]


T0 = float(int(time.time()))  # one start for every run: the old and new rules are compared tick for tick


def _monitor(reference: bool = False, policy=None, figures: bool = True) -> tuple[Monitor, Wall, list[str]]:
    wall = Wall(T0)
    mon = Monitor(policy or load_policy(DEFAULT_POLICY), clock=EventClock(wall=wall), figures=figures,
                  tuning=EngineTuning(evaluate_unchanged=reference, eval_budget_s=math.inf))  # no CPU budget per
    # tick: on a loaded machine a budget would put evaluations off and make the two rules differ for that reason
    seen: list[str] = []
    inner = mon._evaluate_scope

    def counted(scope, *args):
        seen.append(scope)
        return inner(scope, *args)

    mon._evaluate_scope = counted  # type: ignore[method-assign]
    return mon, wall, seen


def _run(mon: Monitor, wall: Wall, seconds: float, step: float = 5.0) -> list[tuple[float, str, str, str]]:
    out = []
    end = wall.t + seconds
    while wall.t < end:
        wall.t += step
        out += sorted((t.ts, t.scope, t.from_state, t.to_state)  # a tick's moves by scope (its order is a set's)
                      for c in mon.evaluate(wall.t) for t in c.transitions)
    return out


@pytest.mark.parametrize("story", ["open", "escalate"])
def test_timers_run_out_without_events_at_the_same_tick_as_the_old_rule(story: str) -> None:
    """Open → half-open after the cool-down, escalated → closed after clear_after: no event needed, same ticks."""
    runs = []
    for reference in (True, False):
        mon, wall, seen = _monitor(reference)
        if story == "open":
            mon.ingest(0, _events("a", wall.t, 220, incidents=12))
        else:
            mon.ingest(0, _events("a", wall.t, 30, flags=20))
        first = _run(mon, wall, 5.0)
        seen.clear()
        later = _run(mon, wall, 3 * 3600.0)  # no events from here on
        runs.append((first, later, len(seen)))
    (ref_first, ref_later, ref_evals), (first, later, evals) = runs
    wanted = "open" if story == "open" else "escalated"
    assert any(to == wanted for *_, to in first), first
    assert later and (first, later) == (ref_first, ref_later)
    if story == "escalate":  # (half-open, where the open story ends, is evaluated every tick by design)
        assert evals * 4 < ref_evals, (evals, ref_evals)  # the old rule evaluated the quiet breakers every tick


def test_a_state_written_from_outside_is_evaluated_on_the_next_tick() -> None:
    """An open state arriving from another worker (or an operator) whose cool-down is over: half-open next tick.

    Without the write hook the scope would have no recheck scheduled and would stay open forever.
    """
    mon, wall, _ = _monitor()
    mon.ingest(0, _events("a", wall.t, 10))
    _run(mon, wall, 10.0)
    assert mon.states.get("agent:a") is None or mon.states["agent:a"].state == "closed"
    mon.states["agent:a"] = BreakerState("agent:a", "open", since=wall.t - 600, cooldown_s=300.0,
                                         budget="critical-incidents", updated_at=wall.t)
    moves = _run(mon, wall, 5.0)
    assert [(scope, to) for _, scope, _, to in moves] == [("agent:a", "half_open")]


def test_an_agent_restored_after_its_state_arrived_has_its_breakers_evaluated() -> None:
    """Breaker-state recovered before the agent's checkpoint: the scope is this worker's once the agent is."""
    donor, dwall, _ = _monitor()
    donor.ingest(0, _events("b", dwall.t, 10))
    (_, _, checkpoint), = [c for c in donor.checkpoint() if c[1] == "b"]
    mon, wall, seen = _monitor()
    mon.states["agent:b"] = BreakerState("agent:b", "open", since=wall.t - 600, cooldown_s=300.0,
                                         budget="critical-incidents", updated_at=wall.t)
    _run(mon, wall, 10.0)
    assert mon.states["agent:b"].state == "open" and "agent:b" not in seen  # not this worker's agent yet
    mon.restore("b", checkpoint)
    moves = _run(mon, wall, 5.0)
    assert [(scope, to) for _, scope, _, to in moves] == [("agent:b", "half_open")]


def test_own_state_records_coming_back_do_not_wake_the_scope() -> None:
    """The worker reads back what it published: an identical record is nothing new (no extra evaluation)."""
    import orjson

    mon, wall, seen = _monitor()
    mon.ingest(0, _events("a", wall.t, 220, incidents=12))
    _run(mon, wall, 5.0)
    st = mon.states["agent:a"]
    assert st.state == "open"
    seen.clear()
    mon.apply_remote(orjson.dumps(st.to_dict()), b"agent:a")
    _run(mon, wall, 5.0)
    assert seen == []


def test_a_lagging_agent_catching_up_moves_its_other_breakers_rechecks_earlier() -> None:
    """An agent's windows are read at its own now (wall − lag). When its lag falls (a lagging partition caught
    up), every one of its breakers' windows moves forward at once — also those of tools the new event did not
    name, which no event wakes. Their re-checks must move forward too: same transitions, same ticks as the
    old rule. (Without it: the db scope started its quiet time, and so cleared, 2 minutes late.)"""
    runs = []
    for reference in (True, False):
        mon, wall, _ = _monitor(reference)
        lagging = wall.t - 2400.0  # this partition is 40 minutes behind
        evs = _events("a", lagging, 30, flags=20)
        evs += [e.model_copy(update={"tool": "db.query", "event_id": e.event_id + "-db"}) for e in evs]
        mon.ingest(0, evs)
        moves = _run(mon, wall, 60.0)
        assert {(scope, to) for _, scope, _, to in moves} >= {("agent:a/tool:db.query", "escalated")}
        moves += _run(mon, wall, 120.0)
        mon.ingest(0, _events("a", wall.t, 1, start=500))  # caught up: lag 2400 s → 0 (a shell call only)
        moves += _run(mon, wall, 3 * 3600.0)
        runs.append(moves)
    assert runs[0] == runs[1]


# ---------------------------------------------------------------- found by an adversarial review of the re-checks
def _three_ways(story, policy_text: str | None = None, step: float = 5.0) -> None:
    """Run ``story(mon, wall, run)`` under the old rule, the new one and the backtest's screen: same moves."""
    from breakers.policy import parse_policy

    runs = []
    for reference, figures in ((True, True), (False, True), (False, False)):
        mon, wall, _ = _monitor(reference, parse_policy(policy_text) if policy_text else None, figures)
        moves: list = []
        story(mon, wall, lambda seconds, step=step: moves.extend(_run(mon, wall, seconds, step)))
        runs.append(moves)
    assert runs[0] and runs[0] == runs[1] == runs[2]


def test_an_older_newest_event_moving_an_agents_now_back_wakes_its_breakers() -> None:
    """A newer event with a larger lag moves the agent's now backwards: evidence that had left a window is back.

    (Before: the db scope, whose flags came back into its 30m window, cleared 10 minutes early.)"""
    def story(mon, wall, run):
        mon.ingest(0, _events("a", wall.t, 30, flags=20, tool="db.query"))
        run(2000.0)  # the flags left the 30m window at +1600: its quiet time is running
        mon.ingest(0, _events("a", wall.t - 600, 1, start=900))  # one shell call dated 600 s ago: lag 0 → 600 s
        run(3 * 3600.0)
    _three_ways(story)


def test_good_calls_on_a_breaker_not_closed_count_on_the_next_tick() -> None:
    """Good calls only put a closed scope on the relaxed list (every 5 s); on a breaker that is not closed they
    can end the firing (here: diluting the rate) and must be seen next tick, as before. (Before: 3 s late.)"""
    def story(mon, wall, run):
        mon.ingest(0, _events("a", wall.t, 30, flags=20, tool="db.query"))
        run(12.0)
        mon.ingest(0, _events("a", wall.t, 2000, tool="db.query", start=100))
        run(2 * 3600.0)
    _three_ways(story, step=1.0)


WEEKLY = """
budgets:
  - {name: weekly-near-miss, signal: near_miss_rate, scopes: ["agent:*"], objective: 0.5, action: open, cooldown: 5m,
     windows: [{long: 7d, burn_rate: 1.0, severity: page}], min_evidence: {min_calls: 1, min_bad: 1}}
  - {name: weekly-incidents, signal: incident_count, scopes: ["agent:*"], objective: 1, action: escalate,
     clear_after: 1h, windows: [{long: 7d, burn_rate: 1.0, severity: page}], min_evidence: {min_bad: 1}}
  - {name: tool-hourly, signal: near_miss_rate, scopes: ["agent:*/tool:*"], objective: 0.5, action: open,
     windows: [{long: 1h, burn_rate: 1.0, severity: page}], min_evidence: {min_calls: 1, min_bad: 1}}
"""


def test_a_reset_baseline_lasts_as_long_as_its_own_windows() -> None:
    """An operator's reset of one scope no longer drops another scope's baseline while that scope's 7-day window
    still reaches back before its reset (it brought the reviewed evidence back at someone else's reset)."""
    from breakers.state_machine import reset

    def story(mon, wall, run):
        mon.ingest(0, _events("b", wall.t, 10, flags=10, tool="x"))
        mon.ingest(0, _events("a", wall.t, 5))
        run(60.0)
        new, _ = reset(mon.states["agent:b"], "op", "reviewed the flags", wall.t)
        mon.note_reset("agent:b", wall.t)
        mon.states["agent:b"] = new
        run(60.0)
        mon.ingest(0, _events("b", wall.t, 0, incidents=1, start=50))
        run(3 * 86400.0 + 3600.0, step=60.0)
        mon.note_reset("agent:a/tool:shell", wall.t)  # an unrelated reset, more than 3 days later
        run(600.0, step=60.0)
        assert mon.states["agent:b"].state == "escalated"  # the reviewed flags still do not count
    _three_ways(story, WEEKLY)
