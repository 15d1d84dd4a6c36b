"""/metrics cardinality by design (issue #17): which series exist, and what they mean, on fixed inputs.

Each expected figure is computed here from the input, not read back from the engine:
per-tool near-miss series only for an agent's top tools, breaker series only for non-closed scopes
(with since-when and why), per-agent ``_total`` counters, per-scope budget series only where they
help, per-scope denied authz calls, and the series budget on the shipped ToolEmu file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time

import pytest

from breakers.introspect import KeyRing
from breakers.operators import OperatorRegistry
from breakers.policy import load_policy
from breakers.state_machine import BreakerState
from detectors import rate_estimate
from streams.contract.schema import TraceEvent
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.engine.readouts import is_agent_tool_scope
from streams.settings import DEFAULT_POLICY, Settings
from streams.worker.http.api import Api
from streams.worker.views import authz_families, breaker_families, monitor_families
from helpers.support import REPO, shared_data


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _ev(agent: str, t: float, n: int, kind: str = "tool_call", tool: str = "shell", **extra: object) -> list[TraceEvent]:
    base = {"schema_version": "1", "ts": int(t * 1000), "agent_id": agent, "kind": kind, "tool": tool}
    if kind == "tool_call":
        base["status"] = "ok"
    if kind == "monitor_flag":
        base["severity"] = "low"
    if kind == "incident":
        base["severity"] = "critical"
    return [TraceEvent.model_validate({**base, **extra, "event_id": f"{agent}-{tool}-{kind}-{t}-{i}"})
            for i in range(n)]


@pytest.fixture
def mon() -> tuple[Monitor, Wall]:
    wall = Wall(time.time())
    return Monitor(load_policy(DEFAULT_POLICY), clock=EventClock(wall=wall)), wall


def _families(monitor: Monitor, settings: Settings) -> dict[str, object]:
    return {f.name: f for f in [*monitor_families(monitor, settings), *breaker_families(monitor, {})]}


def test_near_miss_series_are_all_tools_plus_the_top_tools_by_near_misses(mon) -> None:
    monitor, wall = mon
    flags = {"t0": 0, "t1": 0, "t2": 1, "t3": 2, "t4": 3, "t5": 4}  # 10 calls each
    for tool, k in flags.items():
        monitor.ingest(0, _ev("a", wall.t, 10, tool=tool) + _ev("a", wall.t, k, "monitor_flag", tool=tool))
    fams = _families(monitor, Settings(metrics_tools_per_agent=3))
    rows = {(s.labels["tool"], s.labels["window"]): s.value for s in fams["tripwire_near_miss_rate"].samples
            if s.labels["agent"] == "a"}
    assert {tool for tool, _ in rows} == {"*", "t5", "t4", "t3"}  # old code: every tool, t0..t5
    assert len(rows) == 4 * 6  # 4 series x 6 windows
    assert rows[("*", "1h")] == pytest.approx(10 / 60)
    assert rows[("t5", "1h")] == pytest.approx(4 / 10)
    lower = {s.labels["tool"]: s.value for s in fams["tripwire_near_miss_rate_lower"].samples
             if s.labels["agent"] == "a" and s.labels["window"] == "1h"}
    assert lower["t4"] == pytest.approx(rate_estimate(3, 10).lower)


def test_breaker_series_exist_for_non_closed_scopes_only_with_since_and_why(mon) -> None:
    monitor, wall = mon
    monitor.ingest(0, _ev("a", wall.t, 220) + _ev("a", wall.t, 12, "incident"))
    monitor.ingest(0, _ev("drill-x", wall.t, 220) + _ev("drill-x", wall.t, 12, "incident"))
    monitor.states["agent:calm"] = BreakerState.initial("agent:calm", wall.t)  # a known, closed scope
    wall.t += 6.0
    opened_at = wall.t
    monitor.evaluate(wall.t)
    assert monitor.states["agent:a"].state == "open"
    fams = _families(monitor, Settings())
    state = {(s.labels["scope"], s.labels["state"]): s.value for s in fams["tripwire_breaker_state"].samples}
    not_closed = {scope: st.state for scope, st in monitor.states.items() if st.state != "closed"}
    assert {"agent:a", "agent:drill-x"} <= set(not_closed) and "agent:calm" in monitor.states
    assert {scope for scope, _ in state} == set(not_closed)  # old code: agent:calm (closed) too
    assert state[("agent:a", "open")] == 1.0 and state[("agent:a", "closed")] == 0.0
    since = {s.labels["scope"]: (s.labels["state"], s.labels["drill"], s.value)
             for s in fams["tripwire_breaker_state_since_timestamp_seconds"].samples}
    assert since == {scope: (st, "true" if "drill-x" in scope else "false", opened_at)
                     for scope, st in not_closed.items()}
    info = {s.labels["scope"]: s.labels for s in fams["tripwire_breaker_state_info"].samples}
    st = monitor.states["agent:a"]
    assert info["agent:a"]["budget"] == st.budget == "critical-incidents"
    assert info["agent:a"]["reason"] == st.reason and "critical" in st.reason
    # evidence: the 1h window of the opening verdict, 232 events of which 220 calls and 12 incidents
    assert "tool calls 220" in info["agent:a"]["evidence"], info["agent:a"]["evidence"]
    assert info["agent:drill-x"]["drill"] == "true"


def test_per_agent_totals_count_accepted_calls_and_near_misses(mon) -> None:
    monitor, wall = mon
    monitor.ingest(0, _ev("a", wall.t, 37) + _ev("a", wall.t, 5, "monitor_flag") + _ev("a", wall.t, 2, "incident"))
    monitor.ingest(0, _ev("b", wall.t, 11, tool="search"))
    monitor.ingest(0, _ev("b", wall.t, 11, tool="search"))  # the same event ids again: deduped by the pipeline
    # only the pipeline dedupes; the monitor counts what it is given: 22 for b
    fams = _families(monitor, Settings())
    calls = {s.labels["agent"]: s.value for s in fams["tripwire_agent_tool_calls"].samples}
    flags = {s.labels["agent"]: s.value for s in fams["tripwire_agent_near_misses"].samples}
    assert calls == {"a": 37, "b": 22}
    assert flags == {"a": 5}


def test_per_agent_totals_fold_agents_past_the_cap_into_other(mon) -> None:
    wall = mon[1]
    monitor = Monitor(load_policy(DEFAULT_POLICY), clock=EventClock(wall=wall), max_agents=2)
    for i in range(5):
        monitor.ingest(0, _ev(f"agent-{i}", wall.t, 3))
    calls = {s.labels["agent"]: s.value for f in monitor_families(monitor, Settings(max_agents=2))
             if f.name == "tripwire_agent_tool_calls" for s in f.samples}
    assert calls == {"agent-0": 3, "agent-1": 3, "other": 9}


def test_budget_series_only_for_agent_scopes_non_closed_scopes_and_the_top_burns(mon) -> None:
    monitor, wall = mon
    flags = {"t0": 0, "t1": 1, "t2": 2, "t3": 3}  # 40 calls each: burns rise with the flags
    for tool, k in flags.items():
        monitor.ingest(0, _ev("a", wall.t, 40, tool=tool) + _ev("a", wall.t, k, "monitor_flag", tool=tool))
    wall.t += 6.0
    monitor.evaluate(wall.t)
    evaluated = set(monitor.last_verdicts)
    assert {f"agent:a/tool:{t}" for t in flags} <= evaluated
    fams = _families(monitor, Settings(metrics_top_scopes=1))
    scopes = {s.labels["scope"] for s in fams["tripwire_burn_rate"].samples}
    # independent: the highest burn of each agent x tool scope that is closed
    burns = {s: max(b for v in vs for b in v.burn_rates.values()) for s, vs in monitor.last_verdicts.items()}
    not_closed = {s for s, st in monitor.states.items() if st.state != "closed"}
    pairs = sorted((s for s in burns if is_agent_tool_scope(s) and s not in not_closed), key=lambda s: -burns[s])
    assert scopes == {"agent:a"} | (not_closed & set(burns)) | {pairs[0]}
    assert pairs[0] == "agent:a/tool:t3" or "agent:a/tool:t3" in not_closed
    for name in ("tripwire_budget_remaining_ratio", "tripwire_budget_firing"):
        assert {s.labels["scope"] for s in fams[name].samples} <= scopes


def test_denied_authz_calls_are_counted_by_the_denying_scope(mon) -> None:
    monitor, wall = mon
    monitor.ingest(0, _ev("a", wall.t, 220) + _ev("a", wall.t, 12, "incident"))
    wall.t += 6.0
    monitor.evaluate(wall.t)

    async def publish(change: object) -> None:
        return None

    api = Api(monitor, OperatorRegistry.from_config([]), KeyRing.from_config([]), publish, known=lambda: True)

    async def ask() -> list[int]:
        out = []
        for agent, tool in [("a", "shell")] * 3 + [("b", "shell")] * 2 + [("a", "search")]:
            out.append((await api.authz(agent, tool, None)).status)
        return out

    assert asyncio.run(ask()) == [403, 403, 403, 200, 200, 403]
    settings = Settings(metrics_max_denied_scopes=5)
    (fam,) = authz_families(api.denied_by_scope, settings)
    # shell calls: the agent x tool scope (open too, the incidents were on shell) is the most specific denier
    assert monitor.states["agent:a/tool:shell"].state == "open"
    assert {s.labels["scope"]: s.value for s in fam.samples} == {"agent:a/tool:shell": 3, "agent:a": 1}


def test_denied_scopes_past_the_cap_report_as_other() -> None:
    settings = Settings(metrics_max_denied_scopes=2)
    (fam,) = authz_families({"agent:a": 1, "agent:b": 2, "agent:c": 3, "agent:d": 4}, settings)
    assert {s.labels["scope"]: s.value for s in fam.samples} == {"agent:a": 1, "agent:b": 2, "other": 7}


def test_the_denied_scope_cap_is_never_another_settings_objects() -> None:
    """The cap was cached by id(settings): once a Settings object was gone, a new one could get its id and
    with it the old cap (a CI run reported every denied scope past a cap of 2)."""
    for cap in (200, 2, 200, 2, 2, 200, 2):
        settings = Settings(metrics_max_denied_scopes=cap)
        (fam,) = authz_families({"agent:a": 1, "agent:b": 2, "agent:c": 3, "agent:d": 4}, settings)
        labels = {s.labels["scope"] for s in fam.samples}
        assert ("other" in labels) == (cap == 2), (cap, labels)
        del settings, fam


def _bench():
    spec = importlib.util.spec_from_file_location("bench_series", REPO / "bench" / "bench_series.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_toolemu_worker_stays_within_the_series_budget() -> None:
    """The documented budget (docs/metrics.md, *Series budget*): at most 6,000 series for a worker that
    has seen the shipped ToolEmu file plus 17 more agents. The old exposition: 33,525 series."""
    import orjson

    bench = _bench()
    path = shared_data("toolemu-trace-v1.jsonl")
    events = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    first = min(e["ts"] for e in events)
    events += bench.synthetic(17, 10, 6, first, prefix="extra-agent")
    settings = Settings()
    monitor, pipeline, _ = bench.feed(events, settings)
    body, _ms = bench.scrape(monitor, pipeline, settings, repeat=1)
    total, per = bench.count_series(body)
    assert len({e["agent_id"] for e in events}) == 42
    assert total <= bench.SERIES_BUDGET_TOOLEMU, per.most_common(8)
    labelled = {s for s in body.decode().splitlines() if s.startswith("tripwire_near_miss_rate{")}
    # per agent: "*" + at most 3 tools, x 6 windows (+ "other")
    assert len(labelled) <= (42 + 1) * 4 * 6
