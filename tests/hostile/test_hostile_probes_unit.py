"""Issue #15 (4) and (8), on the real Monitor (no broker): forged good traffic cannot close a
half-open breaker, and a bare ``drill_id`` cannot take a real agent out of cross-agent scopes.

Before: any ``tool_call`` seen while a scope was half-open counted as a clean probe, whether or not
authz admitted it (or anyone signed it), so a producer with write access to the trace topic closed
automatically-opened breakers with a handful of forged calls. One event with ``drill_id`` marked an
agent as a drill for good (checkpointed), dropping it from every cross-agent scope.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from breakers.policy import load_policy
from breakers.state_machine import CLOSED, HALF_OPEN, OPEN, BreakerState, probe
from streams.contract.schema import TraceEvent
from streams.engine.agent_state import decode_checkpoint, encode_checkpoint
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.engine.probes import NO_ISSUED_SLOT, UNATTESTED
from streams.settings import DEFAULT_POLICY
from helpers.hostile import Wall, trace_event as ev

POLICY = load_policy(DEFAULT_POLICY)
T0 = 1_790_000_000.0
SCOPE = "agent:a"



def calls(agent: str, ts: float, n: int, **fields: Any) -> list[TraceEvent]:
    return [ev(agent, ts, **fields) for _ in range(n)]


def half_open(simulate_gateway: bool = False) -> tuple[Monitor, Wall]:
    """A Monitor whose ``agent:a`` is half-open with 5 probe slots, none issued yet (as :func:`step` leaves it)."""
    wall = Wall(T0)
    mon = Monitor(POLICY, clock=EventClock(wall=wall), simulate_gateway=simulate_gateway)
    mon.ingest(0, calls("a", wall.t, 3), attested=True)
    mon.states[SCOPE] = BreakerState(SCOPE, HALF_OPEN, since=wall.t, updated_at=wall.t, reason="cool-down over",
                                     budget="critical-incidents", cooldown_s=300, open_count=1, probes_required=5,
                                     probes_remaining=5, probe_deadline=wall.t + 600)
    return mon, wall


def take_slots(mon: Monitor, n: int) -> None:
    """What ``/v1/authz`` does for each call it admits as a probe."""
    for _ in range(n):
        mon.states[SCOPE], admitted = probe(mon.states[SCOPE], mon.clock.now())
        assert admitted


def settle(mon: Monitor, wall: Wall, scope: str = SCOPE) -> str:
    wall.t += 6
    mon.evaluate(wall.t)
    return mon.states[scope].state


def test_forged_unattested_calls_do_not_close_a_half_open_breaker() -> None:
    mon, wall = half_open()
    take_slots(mon, 5)  # even with every slot issued: the results must be attested
    mon.ingest(0, calls("a", wall.t, 50))
    assert settle(mon, wall) == HALF_OPEN
    assert mon.states[SCOPE].probes_ok == 0
    assert mon.probes.ignored[UNATTESTED] == 50


def test_calls_beyond_the_issued_slots_do_not_count() -> None:
    mon, wall = half_open()
    mon.ingest(0, calls("a", wall.t, 20), attested=True)  # no slot issued: the gateway never admitted them
    assert settle(mon, wall) == HALF_OPEN and mon.states[SCOPE].probes_ok == 0
    take_slots(mon, 2)
    mon.ingest(0, calls("a", wall.t, 5), attested=True)
    assert settle(mon, wall) == HALF_OPEN and mon.states[SCOPE].probes_ok == 2
    assert mon.probes.ignored[NO_ISSUED_SLOT] == 23


def test_attested_results_of_issued_slots_close_it() -> None:
    mon, wall = half_open()
    take_slots(mon, 5)
    mon.ingest(0, calls("a", wall.t, 5), attested=True)
    assert settle(mon, wall) == CLOSED
    assert mon.probes.ignored[NO_ISSUED_SLOT] == 0 and mon.probes.ignored[UNATTESTED] == 0


def test_an_unattested_incident_still_reopens() -> None:
    """Unattested events may help trip a breaker; they never close one."""
    mon, wall = half_open()
    take_slots(mon, 1)
    mon.ingest(0, [ev("a", wall.t, "incident")])
    assert mon.states[SCOPE].state == OPEN and mon.states[SCOPE].open_count == 2


def test_the_backtest_s_simulated_gateway_takes_slots_itself() -> None:
    mon, wall = half_open(simulate_gateway=True)
    mon.ingest(0, calls("a", wall.t, 4), attested=True)
    assert mon.states[SCOPE].probes_remaining == 1 and mon.states[SCOPE].probes_ok == 4
    mon.ingest(0, calls("a", wall.t, 3), attested=True)
    assert mon.probes.ignored[NO_ISSUED_SLOT] == 2
    assert settle(mon, wall) == CLOSED


# ------------------------------------------------------------------ drill membership (issue #15 (8))
@pytest.fixture(scope="module")
def global_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    incidents = next(b for b in doc["budgets"] if b["name"] == "critical-incidents")
    doc["budgets"] = [dict(incidents, name="global-critical-incidents", scopes=["global", "tool:*"])]
    path = tmp_path_factory.mktemp("policy") / "global.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_drill_id_does_not_take_a_real_agent_out_of_global_scopes(global_policy: Path) -> None:
    wall = Wall(T0)
    mon = Monitor(load_policy(global_policy), clock=EventClock(wall=wall))
    mon.ingest(0, [ev("billing", wall.t, drill_id="forged")])  # one event claims a drill
    mon.ingest(0, calls("billing", wall.t, 220) + [ev("billing", wall.t, "incident") for _ in range(12)])
    assert mon.window_counts("global", 3600, wall.t)["incidents"] == 12
    assert settle(mon, wall, "global") == OPEN and mon.states["tool:shell"].state == OPEN


def test_a_stored_drill_flag_is_ignored_at_restore(global_policy: Path) -> None:
    """A checkpoint written while the flag came from traffic must not keep the agent out."""
    wall = Wall(T0)
    before = Monitor(load_policy(global_policy), clock=EventClock(wall=wall))
    before.ingest(0, calls("billing", wall.t, 30))
    [(_, key, value)] = before.checkpoint()
    state = decode_checkpoint(value)
    state["drill"] = True
    after = Monitor(load_policy(global_policy), clock=EventClock(wall=wall))
    after.restore(key, encode_checkpoint(state))
    assert after.window_counts("global", 3600, wall.t)["tool_calls"] == 30


def test_drill_membership_comes_from_the_id_prefix(global_policy: Path) -> None:
    wall = Wall(T0)
    mon = Monitor(load_policy(global_policy), clock=EventClock(wall=wall))
    mon.ingest(0, calls("drill-bot-1", wall.t, 30))  # no drill_id: still a drill agent by its id
    mon.ingest(0, calls("billing", wall.t, 20))
    assert mon.window_counts("global", 3600, wall.t)["tool_calls"] == 20


def test_a_drill_id_on_a_real_agent_is_a_probe_result_for_cross_agent_scopes(global_policy: Path) -> None:
    wall = Wall(T0)
    mon = Monitor(load_policy(global_policy), clock=EventClock(wall=wall))
    mon.ingest(0, calls("billing", wall.t, 3), attested=True)
    mon.states["global"] = BreakerState("global", HALF_OPEN, since=wall.t, updated_at=wall.t, probes_required=5,
                                        probes_remaining=5, probe_deadline=wall.t + 600)
    mon.ingest(0, [ev("billing", wall.t, "incident", drill_id="forged")])
    assert mon.states["global"].state == OPEN  # a forged drill_id does not hide a failed probe
