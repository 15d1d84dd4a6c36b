"""Issue #15 (2), hostile clocks, on the real Monitor (no broker): one odd timestamp or a lagging
partition blinds nobody, and wall-clock decisions do not run on event time.

Before: one event dated +23 h moved the agent's watermark, so every later real event of that agent
was "late" and the agent stayed closed while an identical control agent was cut off; the same event
moved the worker's clock (clamped to +60 s), so cool-downs, approvals and audit timestamps ran a
minute early; an agent whose partition lagged 8 minutes read 0 in its 5-minute window.

The pipeline dead-letters events dated more than ``max_future_skew_s`` (300 s) ahead as
``ts_future``; these tests feed the Monitor directly, so they also hold for an event at the edge
of that skew (299 s) and for a deployment that raised the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from breakers.policy import load_policy
from breakers.state_machine import ESCALATED, OPEN, BreakerState, approve
from streams.contract.schema import TraceEvent
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.settings import DEFAULT_POLICY
from helpers.hostile import Wall, trace_event as ev

POLICY = load_policy(DEFAULT_POLICY)
T0 = 1_790_000_000.0



def traffic(agent: str, ts: float, calls: int, incidents: int) -> list[TraceEvent]:
    return [ev(agent, ts) for _ in range(calls)] + [ev(agent, ts, "incident") for _ in range(incidents)]


def monitor(wall: Wall, policy: Any = POLICY) -> Monitor:
    return Monitor(policy, clock=EventClock(wall=wall))


@pytest.mark.parametrize("ahead_s", [23 * 3600.0, 299.0], ids=["+23h", "+299s"])
def test_one_future_event_does_not_shield_an_agent_from_its_breaker(ahead_s: float) -> None:
    """The attacked agent is cut off exactly like an identical control agent."""
    wall = Wall(T0)
    mon = monitor(wall)
    mon.ingest(0, [ev("victim", wall.t + ahead_s)])  # one forged event, then the same real traffic for both
    for minute in range(10):
        wall.t += 60
        for agent in ("victim", "control"):
            mon.ingest(0, traffic(agent, wall.t, 22, 2 if minute < 6 else 0))
    mon.evaluate(wall.t)
    assert mon.states["agent:control"].state == OPEN
    assert mon.states["agent:victim"].state == OPEN
    assert mon.agents["victim"].counts.late == 0 and mon.late_events == 0
    hour = {a: mon.window_counts(f"agent:{a}", 3600, wall.t) for a in ("victim", "control")}
    assert hour["victim"]["incidents"] == hour["control"]["incidents"] == 12
    assert hour["victim"]["tool_calls"] == hour["control"]["tool_calls"] + 1  # the forged call counts, at the wall clock


def test_lateness_still_applies_after_a_future_event() -> None:
    """Events older than the agent's watermark - lateness are late and counted as late, as before."""
    wall = Wall(T0)
    mon = monitor(wall)
    mon.ingest(0, [ev("a", wall.t + 299.0)])
    mon.ingest(0, [ev("a", wall.t - 301.0), ev("a", wall.t - 10.0)])
    assert mon.late_events == 1 and mon.agents["a"].counts.late == 1


def test_a_future_event_does_not_move_the_decision_clock() -> None:
    """``clock.now()`` (authz, introspection token expiry, operator audit ``at``) stays the wall clock."""
    wall = Wall(T0)
    mon = monitor(wall)
    mon.ingest(0, [ev("anyone", wall.t + 299.0)])
    assert mon.clock.now() == wall.t
    mon.ingest(0, traffic("a", wall.t, 220, 12))
    changes = mon.evaluate(wall.t)
    [tr] = [t for c in changes for t in c.transitions if t.scope == "agent:a"]
    assert tr.ts == wall.t and mon.states["agent:a"].since == wall.t and mon.states["agent:a"].updated_at == wall.t


def test_a_future_event_does_not_end_a_cool_down_early() -> None:
    wall = Wall(T0)
    mon = monitor(wall)
    mon.ingest(0, traffic("a", wall.t, 220, 12))
    mon.evaluate(wall.t)
    opened = mon.states["agent:a"]
    assert opened.state == OPEN and opened.cooldown_s == 300 and opened.open_count == 1
    mon.ingest(0, [ev("someone-else", wall.t + 299.0)])  # the worker-wide clock used to jump ahead for everyone
    for _ in range(9):  # evaluate up to 30 s before the cool-down ends
        wall.t += 30
        mon.evaluate(wall.t)
    st = mon.states["agent:a"]
    assert (st.state, st.since, st.open_count) == (OPEN, opened.since, 1), "the cool-down ended early"
    wall.t += 31
    mon.evaluate(wall.t)
    st = mon.states["agent:a"]
    assert (st.open_count, st.updated_at) == (2, wall.t)  # now it ends (re-opened: the incidents still fire)


def test_a_future_event_does_not_expire_an_approval_early() -> None:
    wall = Wall(T0)
    mon = monitor(wall)
    mon.ingest(0, traffic("a", wall.t, 5, 0))
    esc = BreakerState("agent:a", ESCALATED, since=wall.t, updated_at=wall.t, reason="test", budget="weighted-near-miss")
    mon.states["agent:a"], _ = approve(esc, "ann", "approved for the migration", mon.clock.now(), ttl_s=120)
    mon.ingest(0, [ev("someone-else", wall.t + 299.0)])
    wall.t += 100
    changes = mon.evaluate(wall.t)
    assert not [t for c in changes for t in c.transitions if t.action == "approval_expired"]
    assert mon.states["agent:a"].active_approval(mon.clock.now()) is not None
    wall.t += 21
    changes = mon.evaluate(wall.t)
    assert [t for c in changes for t in c.transitions if t.action == "approval_expired"]


@pytest.fixture(scope="module")
def five_minute_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Critical incidents over 5 minutes, on agents and globally."""
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["budgets"] = [{"name": "crit-5m", "signal": "critical_incident_rate", "scopes": ["agent:*", "global"],
                       "objective": 0.02, "windows": [{"long": "5m", "burn_rate": 1.0, "severity": "page"}],
                       "min_evidence": {"min_calls": 20, "min_bad": 1}, "action": "open", "cooldown": "5m",
                       "half_open_probes": 2}]
    path = tmp_path_factory.mktemp("policy") / "five-minutes.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_lagging_partition_reads_its_own_five_minute_window(five_minute_policy: Path) -> None:
    """Partition 1 lags 8 minutes behind partition 0: its agent is still read, and cut off."""
    wall = Wall(T0)
    mon = monitor(wall, load_policy(five_minute_policy))
    for _ in range(6):
        wall.t += 10
        mon.ingest(0, traffic("live", wall.t, 5, 0))
        mon.ingest(1, traffic("lagging", wall.t - 480.0, 5, 1))
    counts = mon.window_counts("agent:lagging", 300, wall.t)
    assert (counts["tool_calls"], counts["incidents"]) == (30, 6)
    glob = mon.window_counts("global", 300, wall.t)
    assert (glob["tool_calls"], glob["incidents"]) == (60, 6)  # each agent summed at its own now
    mon.evaluate(wall.t)
    assert mon.states["agent:lagging"].state == OPEN
    assert mon.states["global"].state == OPEN
    assert "agent:live" not in mon.states or mon.states["agent:live"].state != OPEN
    assert mon.partition_partials(1)["global"][300]["incidents"] == 6  # what other workers' deciders read


def test_an_idle_agent_s_windows_still_roll_forward() -> None:
    """An agent's now advances with the wall clock while it is idle (its evidence ages out)."""
    wall = Wall(T0)
    mon = monitor(wall)
    mon.ingest(1, traffic("lagging", wall.t - 480.0, 30, 3))
    assert mon.window_counts("agent:lagging", 300, wall.t)["incidents"] == 3
    wall.t += 301
    assert mon.window_counts("agent:lagging", 300, wall.t)["incidents"] == 0
