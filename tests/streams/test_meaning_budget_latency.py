"""Meaning tests (issue #16): budget remaining over the period, decision latency once per decision.

Each figure is read from the worker's ``/metrics`` exposition (the registry the worker serves, fed by the
engine in-process on a fake wall clock) and compared with an independent computation on a fixed input.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from breakers.policy import parse_policy
from streams.contract.schema import TraceEvent
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.settings import Settings
from streams.worker.decisions import Decisions
from streams.worker.metrics import Metrics
from streams.worker.views import monitor_families

DAY = 86400
PERIOD = 30 * DAY
T0 = 1_790_000_000 - 1_790_000_000 % DAY  # a day boundary (fixed input: the bucket of the first event starts here)

POLICY = """
budgets:
  - name: nm
    signal: near_miss_rate
    scopes: ["agent:*"]
    objective: 0.01
    period: 30d
  - name: spend
    signal: cost
    scopes: ["agent:*"]
    objective: 100
    period: 30d
"""


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


_n = [0]


def _ev(agent: str, ts: float, kind: str, **extra: object) -> TraceEvent:
    _n[0] += 1
    return TraceEvent.model_validate({"schema_version": "1", "event_id": f"m{_n[0]}", "ts": int(ts * 1000),
                                      "agent_id": agent, "kind": kind, **extra})


def _feed(mon: Monitor, wall: Wall, agent: str, ts: float, calls: int, flags: int, cost: float = 0.0) -> None:
    wall.t = max(wall.t, ts)
    evs = [_ev(agent, ts, "tool_call", tool="search", status="ok", cost_usd=cost / calls if calls else 0.0)
           for _ in range(calls)]
    evs += [_ev(agent, ts, "monitor_flag", tool="search", severity="high") for _ in range(flags)]
    mon.ingest(0, evs)


def _scrape(mon: Monitor, metrics: Metrics | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's /metrics text, parsed: (sample name, sorted labels) → value."""
    metrics = metrics or Metrics()
    settings = Settings()
    metrics.add_source(lambda: monitor_families(mon, settings))
    out = {}
    for fam in text_string_to_metric_families(metrics.exposition().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _remaining(scrape: dict, budget: str, scope: str) -> float:
    return scrape[("tripwire_budget_remaining_ratio", (("budget", budget), ("scope", scope)))]


def test_three_days_exactly_at_the_objective_leave_ninety_percent_of_a_30_day_budget() -> None:
    wall = Wall(T0)
    mon = Monitor(parse_policy(POLICY), clock=EventClock(wall=wall))
    calls = flags = 0
    spend = 0.0
    for h in range(72):  # every hour: 100 calls, 1 flag (rate 0.01 = the objective), $0.4625 (10 % of $100 in 3 d)
        _feed(mon, wall, "a", T0 + h * 3600, 100, 1, cost=100 * 0.1 / 72 * 1.0)
        calls, flags, spend = calls + 100, flags + 1, spend + 100 * 0.1 / 72
    wall.t = T0 + 72 * 3600
    mon.evaluate(wall.t)
    scrape = _scrape(mon)

    # independent: the period's budget is objective × the period's calls, extrapolated from 3 observed days
    observed = wall.t - T0
    expected_calls_in_period = calls * PERIOD / observed
    truth = 1 - flags / (0.01 * expected_calls_in_period)
    assert truth == pytest.approx(0.9)
    assert _remaining(scrape, "nm", "agent:a") == pytest.approx(truth, abs=1e-9)
    # amount signal: the objective is $ per period, spent $10 of $100
    assert _remaining(scrape, "spend", "agent:a") == pytest.approx(1 - spend / 100, abs=1e-5)
    # before issue #16 both read 1 - burn over the 3d window = 0.0 (the budget looked exhausted)


def test_thirty_minutes_at_1_67x_leave_99_9_percent() -> None:
    wall = Wall(T0)
    mon = Monitor(parse_policy(POLICY), clock=EventClock(wall=wall))
    calls = flags = 0
    for m in range(30):  # 20 calls a minute, a flag every 3 minutes: 10 / 600 = 1.67 %, burn 1.67×
        f = 1 if m % 3 == 0 else 0
        _feed(mon, wall, "b", T0 + m * 60, 20, f)
        calls, flags = calls + 20, flags + f
    wall.t = T0 + 1800
    mon.evaluate(wall.t)
    got = _remaining(_scrape(mon), "nm", "agent:b")
    burn = flags / calls / 0.01
    truth = 1 - burn * 1800 / PERIOD
    assert burn == pytest.approx(5 / 3) and truth == pytest.approx(0.998843, abs=1e-6)
    assert got == pytest.approx(truth, abs=1e-9)  # before: 1 - 1.67 = -0.67


def test_a_full_period_of_history_reads_one_minus_the_period_burn() -> None:
    """30 days of history: observed = the period; remaining = 1 − burn over the 30 days (here 2× → −1)."""
    wall = Wall(T0)
    mon = Monitor(parse_policy(POLICY), clock=EventClock(wall=wall))
    for d in range(31):
        _feed(mon, wall, "c", T0 + d * DAY, 100, 2)
    wall.t = T0 + 30 * DAY + 60
    mon.evaluate(wall.t)
    # the window holds days 1..30 (day 0 left the ring): 30 days × 2 flags / 3000 calls = 2× the objective
    assert _remaining(_scrape(mon), "nm", "agent:c") == pytest.approx(1 - 2.0, abs=1e-9)


SHADOW_POLICY = """
budgets:
  - name: watch
    signal: near_miss_rate
    scopes: ["agent:*"]
    objective: 0.01
    windows: [{long: 1h, short: 5m, burn_rate: 14.4, severity: page}]
    min_evidence: {min_calls: 10, min_bad: 3}
    action: shadow
    clear_after: 1d
"""


class _Topic:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def send(self, **kw: object) -> None:
        self.sent.append(kw)


def test_an_idle_shadow_agent_adds_one_latency_sample_for_its_one_decision() -> None:
    """The agent trips to shadow once, then idles while the breaker is re-evaluated every tick for 10 min.

    One decision → one sample, of (published − the causing event's ts). Before issue #16 every
    re-evaluation added a sample (wall − the agent's newest event): ~100 here, growing with idle time.
    """
    start = time.time()
    wall = Wall(start)
    mon = Monitor(parse_policy(SHADOW_POLICY), clock=EventClock(wall=wall))
    metrics = Metrics()
    decisions = Decisions(mon, metrics, state_topic=_Topic(), events_topic=_Topic(), alerts=None)
    _feed(mon, wall, "idle", start, 20, 10)  # 50 % flagged: burn 50× with evidence
    caused = start  # the ts of the newest event when the scope tripped

    async def run() -> float:
        await decisions.tick(wall.t)
        published_by = time.time()
        for _ in range(100):  # 10 minutes of ticks, no new event
            wall.t += 6.0
            await decisions.tick(wall.t)
        return published_by

    published_by = asyncio.run(run())
    assert mon.states["agent:idle"].state == "shadow"
    scrape = _scrape(mon, metrics)
    count = scrape[("tripwire_decision_latency_seconds_count", ())]
    total = scrape[("tripwire_decision_latency_seconds_sum", ())]
    assert count == 1.0
    # independent: published after the event (ts = start, ms precision) and no later than published_by
    assert -0.001 <= total <= published_by - caused + 0.001
