"""Issue #15 (7), unit level (no broker): memory per agent is bounded, and bounding it loses nothing.

Attack: a producer invents agent ids (20k new ids in keyless batches took a worker from 196 to
498 MB, ~15 kB per agent, still 443 MB after a restart). Defence (:mod:`streams.engine.agents`):
past ``engine.max_live_agents`` the least recently seen agents, and agents idle for
``engine.agent_spill_idle_s``, are *spilled*: kept only as their zlib'd checkpoint bytes, their
counts folded into per-(partition, cross-agent scope) aggregates so no cross-agent budget loses
them, and restored on their next event or when a scope that reads them is evaluated.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from pathlib import Path

import orjson
import pytest
import yaml

from breakers.policy import load_policy
from breakers.state_machine import BreakerState, force_open
from streams.contract.schema import TraceEvent
from streams.engine.agent_state import encode_checkpoint
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.engine.pipeline import TracePipeline
from streams.engine.tuning import EngineTuning
from streams.settings import DEFAULT_POLICY, Settings
from streams.worker.views import breaker_families

WINDOWS = (300, 1800, 3600, 21600, 86400, 259200, 2592000)


@pytest.fixture(autouse=True)
def no_tripwire_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() must see defaults only."""
    for name in list(os.environ):
        if name.startswith("TRIPWIRE_"):
            monkeypatch.delenv(name)


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def cross_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default policy plus critical incidents budgeted on tool:*, global and tenant:*/global."""
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    incidents = next(b for b in doc["budgets"] if b["name"] == "critical-incidents")
    doc["budgets"].append(dict(incidents, name="cross-critical-incidents",
                               scopes=["tool:*", "global", "tenant:*/global"]))
    path = tmp_path_factory.mktemp("policy") / "cross.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def ev(agent: str, t: float, n: int, kind: str = "tool_call", tool: str | None = "shell",
       tenant: str | None = None) -> list[TraceEvent]:
    extra: dict = {"tool": tool} if tool else {}
    if kind == "incident":
        extra["severity"] = "critical"
    if tenant:
        extra["tenant"] = tenant
    return [TraceEvent.model_validate({"schema_version": "1", "event_id": f"{agent}-{kind}-{t}-{i}",
                                       "ts": int(t * 1000), "agent_id": agent, "kind": kind, **extra})
            for i in range(n)]


def monitor(policy: Path | None, wall: Wall, **tuning: float) -> Monitor:
    return Monitor(load_policy(policy or DEFAULT_POLICY), clock=EventClock(wall=wall), tuning=EngineTuning(**tuning))


def history(mon: Monitor, wall: Wall) -> None:
    """Three agents, two tenants, two tools, events spread over two days up to the wall clock."""
    t0 = wall.t
    for i, (agent, tenant) in enumerate([("a", "t1"), ("b", "t1"), ("c", "t2")]):
        for k, dt in enumerate((-2 * 86400, -7 * 3600, -1700, -200, -30)):
            t = t0 + dt + (i if k < 4 else 0)  # the same newest event time: the same lag
            mon.ingest(i, ev(agent, t, 3 + k, tenant=tenant))
            mon.ingest(i, ev(agent, t, 1, kind="incident", tool="db" if k % 2 else "shell", tenant=tenant))
            mon.ingest(i, ev(agent, t, 1, kind="llm_call", tool=None, tenant=tenant))


SCOPES = ("agent:a", "agent:b/tool:shell", "agent:c/tool:db", "global", "tool:shell", "tool:db",
          "tenant:t1/global", "tenant:t2/global")


def reads(mon: Monitor, wall: Wall) -> dict:
    """Every count of every window of SCOPES, flat (float32 sums compared to 1e-4 relative)."""
    return {(sc, w, k): v for sc in SCOPES for w in WINDOWS for k, v in mon.window_counts(sc, w, wall.t).items()}


def test_spilled_agents_count_the_same_everywhere_and_restore_identical(cross_policy: Path) -> None:
    wall = Wall(time.time())
    mon = monitor(cross_policy, wall)
    history(mon, wall)
    before = {a: st.to_state() for a, st in mon.agents.items()}
    partials = [mon.counts.partition_partials(p, wall.t) for p in range(3)]
    expect = reads(mon, wall)
    mon.evaluate(wall.t)  # the cross-agent scopes were counted for (budgeted): their aggregates exist
    wall.t += 901  # idle past engine.agent_spill_idle_s: evict_idle spills them all
    mon.evict_idle()
    wall.t -= 901
    assert not mon.agents and set(mon.table.spilled) == {"a", "b", "c"}
    assert mon.table.spilled_total == 3
    assert all(len(rec.value) < 4096 for rec in mon.table.spilled.values())
    # cross-agent sums read the spilled agents' aggregates: no blind spot, nothing restored for it
    assert [mon.counts.partition_partials(p, wall.t) for p in range(3)] == partials
    for sc in ("global", "tool:shell", "tool:db", "tenant:t1/global", "tenant:t2/global"):
        for w in WINDOWS:
            for k, v in mon.window_counts(sc, w, wall.t).items():
                assert v == pytest.approx(expect[(sc, w, k)], rel=1e-4), (sc, w, k)
    assert not mon.agents
    # reading an agent scope restores its agent, identical, and takes its counts out of the aggregates
    assert reads(mon, wall) == pytest.approx(expect, rel=1e-4)
    assert set(mon.agents) == {"a", "c", "b"} and not mon.table.spilled
    assert {a: st.to_state() for a, st in mon.agents.items()} == before
    assert all(rc.window_counts(w, wall.t)["events"] == 0 for rc in mon.table.spilled_counts.by.values()
               for w in WINDOWS)


def test_a_spilled_agent_is_checkpointed_and_an_old_checkpoint_restores(cross_policy: Path) -> None:
    wall = Wall(time.time())
    mon = monitor(cross_policy, wall)
    history(mon, wall)
    expect = reads(mon, wall)
    old = {a: st.to_state() for a, st in mon.agents.items()}
    wall.t += 901
    mon.evict_idle()
    wall.t -= 901
    written = {key: value for _, key, value in mon.checkpoint()}  # dirty spilled agents: their spilled bytes
    assert written == {a: rec.value for a, rec in mon.table.spilled.items()}
    fresh = monitor(cross_policy, wall, max_live_agents=1)
    for key, value in written.items():
        fresh.restore(key, value)
    assert len(fresh.agents) <= 1 and len(fresh.agents) + len(fresh.table.spilled) == 3
    assert reads(fresh, wall) == pytest.approx(expect, rel=1e-4)
    # a checkpoint written before this change (a "drill" flag, no lag; plain JSON or zlib) still restores
    # (it reads like the same state with lag 0: the lag did not exist then; the drill flag is ignored)
    legacy = monitor(cross_policy, wall, max_live_agents=1)
    current = monitor(cross_policy, wall, max_live_agents=1)
    for i, (agent, state) in enumerate(old.items()):
        current.restore(agent, encode_checkpoint(dict(state, lag_s=0.0)))
        state = dict(state, drill=True)
        state.pop("lag_s", None)
        legacy.restore(agent, orjson.dumps(state) if i % 2 else encode_checkpoint(state))
    assert reads(legacy, wall) == pytest.approx(reads(current, wall), rel=1e-4)
    if all(not st.get("lag_s") for st in old.values()):  # no lag in the history: the very same reads
        assert reads(legacy, wall) == pytest.approx(expect, rel=1e-4)


def test_the_live_cap_spills_least_recent_first_and_is_exported() -> None:
    wall = Wall(time.time())
    mon = monitor(None, wall, max_live_agents=100)
    for i in range(1000):
        mon.ingest(0, ev(f"agent-{i}", wall.t - 1000 + i, 1))
    assert len(mon.agents) <= 100
    assert "agent-999" in mon.agents and "agent-0" in mon.table.spilled  # the least recently seen went first
    assert len(mon.agents) + len(mon.table.spilled) == 1000
    fams = {f.name: f for f in breaker_families(mon, {})}
    assert fams["tripwire_agents_spilled"].samples[0].value == mon.table.spilled_total >= 900
    assert fams["tripwire_agents_live"].samples[0].value == len(mon.agents)
    # the next event of a spilled agent restores it: nothing lost
    mon.ingest(0, ev("agent-0", wall.t, 2))
    assert mon.window_counts("agent:agent-0", 86400, wall.t)["tool_calls"] == 3.0


def test_an_agent_with_an_open_breaker_is_never_spilled() -> None:
    wall = Wall(time.time())
    mon = monitor(None, wall, max_live_agents=10)
    mon.ingest(0, ev("held", wall.t - 5000, 1))
    policy = mon.policy
    mon.states["agent:held"] = force_open(BreakerState.initial("agent:held", wall.t, policy), "op", "test",
                                          wall.t)[0]
    for i in range(200):
        mon.ingest(0, ev(f"flood-{i}", wall.t, 1))
    wall.t += 901
    mon.evict_idle()
    assert "held" in mon.agents and "held" not in mon.table.spilled


def _flood_batches(n: int, t: float, start: int) -> list[bytes]:
    """Keyless batches of 100 events, each of a new agent id (the reported attack)."""
    out = []
    for b in range(start, start + n, 100):
        out.append(orjson.dumps([{"schema_version": "1", "event_id": f"flood-{i}", "ts": int(t * 1000),
                                  "agent_id": f"invented-{i}", "kind": "tool_call", "tool": "search"}
                                 for i in range(b, min(b + 100, start + n))]))
    return out


def test_20k_invented_agent_ids_stay_bounded_and_the_attacked_agent_still_trips() -> None:
    """Fails on the old code: 20,001 live agents, ~12 kB traced per agent (plus untraced ADWIN cores)."""
    wall = Wall(time.time())
    cap = 1000
    # a generous CPU budget per tick: this test is about memory, not evaluation pacing (a deferred scope
    # is evaluated on a later tick, which would make the number of ticks depend on the machine's speed)
    mon = monitor(None, wall, max_live_agents=cap, eval_budget_s=60.0)
    pipe = TracePipeline(Settings(), sink=mon.ingest)
    mon.evaluate(wall.t)  # the worker's ticks run every second
    # the real agent misbehaves (220 calls, 12 critical incidents) ...
    for chunk in (ev("victim", wall.t - 60, 220), ev("victim", wall.t - 60, 12, kind="incident")):
        pipe.process(b"victim", orjson.dumps([e.model_dump(exclude_none=True) | {"ts": int(e.ts * 1000)}
                                              for e in chunk]), topic="t", partition=0, offset=0)
    # ... and a flood of 20k invented agent ids, all seen more recently than the victim, follows at once
    offset = 1
    for value in _flood_batches(5000, wall.t, 0):
        assert pipe.process(None, value, topic="t", partition=0, offset=offset) == []
        offset += 1
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for value in _flood_batches(15000, wall.t, 5000):
        assert pipe.process(None, value, topic="t", partition=0, offset=offset) == []
        offset += 1
    gc.collect()
    per_agent = (tracemalloc.get_traced_memory()[0] - base) / 15000
    tracemalloc.stop()
    assert len(mon.agents) <= cap
    assert len(mon.agents) + len(mon.table.spilled) == 20001
    assert "victim" in mon.table.spilled  # the least recently seen: spilled, not lost
    # every byte the worker added per extra invented agent (its spilled checkpoint, dedupe id, indexes)
    assert per_agent <= 4096, f"{per_agent:.0f} bytes per idle agent"
    wall.t += 1.0
    mon.evaluate(wall.t)  # its pending evaluation restores it from its spilled bytes
    assert mon.states["agent:victim"].state == "open"
    assert len(mon.agents) <= cap + 1  # back under the cap after the tick (the open agent stays live)
