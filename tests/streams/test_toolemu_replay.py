"""Replay the real ToolEmu trace file through a real worker and check the breakers it ends with
against the policy's semantics, computed independently in this test from the file.

Why bounds and not one exact expected state per agent: the worker evaluates every 0.25 s of WALL
time while the replay pushes ~2 h of EVENT time through in a few seconds, so which prefixes of
the stream an evaluation happens to see is timing-dependent. Escalations also clear after
``clear_after`` (30 min of event time) without firing, so an agent escalated early in the file may
or may not have cleared by the end. What IS determined, and asserted here:

* every agent whose escalate rule fires for every possible final "now" (from its last event to
  the end of the test) ends ``escalated``; every agent whose 3d/6h slow-burn (shadow) rule fires
  that way ends ``shadow`` or ``escalated``;
* an agent can only be ``escalated`` if SOME contiguous stretch of its events has >= 20 calls,
  >= 5 flags and a weighted rate above 0.6/call (6x the 0.10 objective, the lowest page
  threshold): otherwise no window could ever have fired;
* a ``shadow`` from weighted-near-miss likewise needs a stretch above 0.10/call (1x); only the
  drift budget (report-only) can shadow an agent without that;
* nothing opens (the file has no incidents), and exactly the 12 over-long tool names are rejected.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from breakers.evaluate import evaluate
from breakers.evidence import StaticEvidence
from breakers.policy import Policy, load_policy
from detectors.config import DEFAULT_LEVELS
from streams.kafka.producer import TraceProducer
from streams.ops.replay import replay_file
from helpers.support import REPO, SHARED_DATA, consume_all, shared_data, wait_for

pytestmark = pytest.mark.broker

FILE = SHARED_DATA / "toolemu-trace-v1.jsonl"
TOTAL_LINES = 6972
REJECTED = 12
WEIGHTS = {"low": 1.0, "medium": 2.0, "high": 5.0, "critical": 10.0}  # DESIGN/policy: detectors' defaults
WINDOWS = (300, 1800, 3600, 21600, 259200)  # 5m 30m 1h 6h 3d: every window the default policy reads
PAGE_RATE = 0.6  # lowest page threshold of weighted-near-miss: 6x a 0.10 objective
SHADOW_RATE = 0.1  # the ticket (shadow) rule: 1x
MIN_CALLS, MIN_FLAGS = 20, 5


def _bucket_width(window_s: int) -> tuple[int, int]:
    """(bucket width, bucket count) a window is read with: the finest level that holds it."""
    for width, count in DEFAULT_LEVELS:
        if window_s % width == 0 and window_s // width <= count:
            return width, window_s // width
    raise AssertionError(f"no level serves {window_s}s")


class AgentEvents:
    """One agent's accepted events as arrays, with bucket-aligned window sums (our own counting)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        events = sorted(events, key=lambda e: e["ts"])
        self.ts = np.array([e["ts"] / 1000.0 for e in events])
        self.call = np.array([1.0 if e["kind"] == "tool_call" else 0.0 for e in events])
        self.flag = np.array([1.0 if e["kind"] == "monitor_flag" else 0.0 for e in events])
        self.weight = np.array([WEIGHTS.get(e.get("severity"), 1.0) if e["kind"] == "monitor_flag" else 0.0
                                for e in events])
        self.last = float(self.ts.max())

    def window(self, window_s: int, now: float) -> dict[str, float]:
        """Sums over the buckets (now//g - n, now//g] of the level serving ``window_s``."""
        width, count = _bucket_width(window_s)
        now = max(now, self.last)  # a read before the scope's watermark reads at the watermark
        inside = (self.ts // width) > (now // width - count)
        return {"tool_calls": float(self.call[inside].sum()), "near_misses": float(self.flag[inside].sum()),
                "near_misses_weighted": float(self.weight[inside].sum())}

    def max_stretch_rate(self) -> float:
        """Highest weighted flags/call over any contiguous stretch with the minimum evidence."""
        c = np.concatenate([[0.0], np.cumsum(self.call)])
        f = np.concatenate([[0.0], np.cumsum(self.flag)])
        w = np.concatenate([[0.0], np.cumsum(self.weight)])
        best = 0.0
        for i in range(len(self.ts)):
            calls, flags, weighted = c[i + 1:] - c[i], f[i + 1:] - f[i], w[i + 1:] - w[i]
            ok = (calls >= MIN_CALLS) & (flags >= MIN_FLAGS)
            if ok.any():
                best = max(best, float((weighted[ok] / calls[ok]).max()))
        return best

    def actions_at(self, policy: Policy, scope: str, now: float) -> set[str]:
        """Actions of the budgets that fire at ``now`` (breakers.evaluate on our counts)."""
        ev = StaticEvidence({scope: {w: self.window(w, now) for w in WINDOWS}})
        return {v.action for v in evaluate(policy, scope, ev) if v.fired and v.budget == "weighted-near-miss"}


def load_file() -> tuple[dict[str, AgentEvents], int, float]:
    """Accepted events per agent, the number of rejected lines, and the newest event time."""
    per_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    rejected = 0
    for line in FILE.read_bytes().splitlines():
        ev = orjson.loads(line)
        if ev["kind"] == "tool_call" and len(ev.get("tool") or "") > 128:
            rejected += 1  # schema v1: a tool name is at most 128 characters
            continue
        per_agent[ev["agent_id"]].append(ev)
    agents = {a: AgentEvents(evs) for a, evs in per_agent.items()}
    return agents, rejected, max(a.last for a in agents.values())


@pytest.fixture
def replayed(worker: Any, broker: Any) -> dict[str, Any]:
    shared_data(FILE.name)  # skip (fail when CI=true) when the shared data set is missing
    started = time.time()
    producer = TraceProducer(broker.bootstrap, worker.topics.traces)
    try:
        stats = replay_file(FILE, producer, batch=50)
    finally:
        producer.close()
    assert stats.events == TOTAL_LINES
    accepted = TOTAL_LINES - REJECTED
    wait_for(lambda: worker.metric("tripwire_events_total") >= accepted, 60,
             f"{accepted} events counted (tripwire_events_total)")
    return {"started": started, "worker": worker}


def test_toolemu_replay_breakers_match_policy_semantics(replayed: dict[str, Any], broker: Any) -> None:
    w = replayed["worker"]
    policy = load_policy(REPO / "deploy" / "policy" / "default.yaml")
    agents, rejected, t_end = load_file()
    assert rejected == REJECTED
    assert w.metric("tripwire_events_total") == TOTAL_LINES - REJECTED
    assert w.metric("tripwire_events_rejected_total") == REJECTED
    assert len(consume_all(broker.bootstrap, w.topics.dlq, REJECTED, timeout=20)) == REJECTED

    def final_nows(agent: AgentEvents) -> list[float]:
        """Every event-time "now" the worker can have used for the agent's final decisions."""
        hi = t_end + (time.time() - replayed["started"]) + 5
        return list(np.arange(agent.last, hi, 30.0)) + [hi]

    expect: dict[str, dict[str, Any]] = {}
    for agent_id, ag in agents.items():
        scope = f"agent:{agent_id}"
        fired = [ag.actions_at(policy, scope, now) for now in final_nows(ag)]
        expect[agent_id] = {
            "must_escalate": all("escalate" in f for f in fired),
            "must_report": all(f & {"escalate", "shadow"} for f in fired),
            "max_rate": ag.max_stretch_rate(),
            "whole_rate": float(ag.weight.sum() / ag.call.sum()),
        }

    def states() -> dict[str, dict[str, Any]]:
        doc = httpx.get(f"{w.web}/v1/breakers", timeout=10).json()
        return {b["scope"][len("agent:"):]: b for b in doc["breakers"]
                if b["scope"].startswith("agent:") and "/" not in b["scope"]}

    def settled() -> dict[str, dict[str, Any]] | None:
        st = states()
        for agent_id, e in expect.items():
            state = st.get(agent_id, {}).get("state", "closed")
            if e["must_escalate"] and state != "escalated":
                return None
            if e["must_report"] and state not in ("shadow", "escalated"):
                return None
        return st

    wait_for(settled, 30, "the breakers the policy requires at the end of the replay")
    final = states()  # re-read: the bounds below hold at any later moment too

    rows = []
    for agent_id, e in sorted(expect.items()):
        b = final.get(agent_id, {})
        state, budget = b.get("state", "closed"), b.get("budget")
        rows.append(f"{agent_id[:38]:38s} whole {e['whole_rate'] / 0.1:5.1f}x  max-stretch {e['max_rate'] / 0.1:5.1f}x"
                    f"  must-escalate={e['must_escalate']!s:5s} must-report={e['must_report']!s:5s}  -> {state}"
                    f" ({budget})")
        assert state not in ("open", "forced_open", "half_open"), (agent_id, b)
        if e["must_escalate"]:
            assert state == "escalated", (agent_id, b)
        if e["must_report"]:
            assert state in ("shadow", "escalated"), (agent_id, b)
        if state == "escalated":
            assert e["max_rate"] > PAGE_RATE, (agent_id, e, b)
            assert budget == "weighted-near-miss"
        if state == "shadow" and budget == "weighted-near-miss":
            assert e["max_rate"] > SHADOW_RATE, (agent_id, e, b)
        if state == "shadow":
            assert budget in ("weighted-near-miss", "drift"), (agent_id, b)
    print("\n" + "\n".join(rows))
    # the file's spread (6% .. 48% of calls flagged) must show up as a spread of outcomes
    assert sum(e["must_report"] for e in expect.values()) >= 10
    assert any(e["max_rate"] <= PAGE_RATE for e in expect.values())
