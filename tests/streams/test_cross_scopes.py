"""Cross-agent budgets (``tool:X``, ``global``): evaluated at all, and exact across workers.

The policy here budgets critical incidents on ``tool:*`` and ``global`` only (200 calls minimum,
2% objective). Two Monitors stand for two workers holding two trace partitions each and exchange
their partials records the way the transport does (streams.engine.partials).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from breakers.policy import load_policy
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.engine.partials import encode_partials
from streams.contract.schema import TraceEvent
from streams.settings import DEFAULT_POLICY


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def cross_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    incidents = next(b for b in doc["budgets"] if b["name"] == "critical-incidents")
    doc["budgets"] = [dict(incidents, name="tool-critical-incidents", scopes=["tool:*", "global", "tenant:*/global"])]
    path = tmp_path_factory.mktemp("policy") / "cross.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def events(agent: str, t: float, calls: int, incidents: int, drill: bool = False,
           tenant: str | None = None) -> list[TraceEvent]:
    extra: dict = {"drill_id": "d1"} if drill else {}
    if tenant:
        extra["tenant"] = tenant
    evs = [{"schema_version": "1", "event_id": f"{agent}-{i}", "ts": int(t * 1000), "agent_id": agent,
            "kind": "tool_call", "tool": "shell", "status": "ok", **extra} for i in range(calls)]
    evs += [{"schema_version": "1", "event_id": f"{agent}-x{i}", "ts": int(t * 1000), "agent_id": agent,
             "kind": "incident", "tool": "shell", "severity": "critical", **extra} for i in range(incidents)]
    return [TraceEvent.model_validate(e) for e in evs]


def worker(policy: Path, wall: Wall, partitions: set[int] | None) -> Monitor:
    m = Monitor(load_policy(policy), clock=EventClock(wall=wall))
    m.set_assignment(partitions)
    return m


def share(src: Monitor, dst: Monitor) -> None:
    """What the transport does every couple of seconds: src's partitions' counts to dst."""
    for p in src.held_partitions():
        dst.apply_partials(encode_partials("tw", p, src.partition_partials(p)), f"tw:{p}".encode())


def tick(wall: Wall, *monitors: Monitor, dt: float = 6.0) -> None:
    wall.t += dt
    for m in monitors:
        for change in m.evaluate(wall.t):
            for other in monitors:  # every worker reads breaker-state
                other.states[change.state.scope] = change.state


def test_a_lone_worker_opens_tool_and_global_scopes(cross_policy: Path) -> None:
    wall = Wall(time.time())
    m = worker(cross_policy, wall, None)
    for i in range(4):
        m.ingest(i, events(f"a{i}", wall.t, 60, 5))  # no agent alone has 200 calls
    tick(wall, m)
    assert m.states["tool:shell"].state == "open" and m.states["global"].state == "open"
    assert not any(s.startswith("agent:") for s in m.states)


def test_drill_traffic_does_not_spend_a_cross_agent_budget(cross_policy: Path) -> None:
    wall = Wall(time.time())
    m = worker(cross_policy, wall, None)
    m.ingest(0, events("drill-bot-1", wall.t, 300, 30, drill=True))
    tick(wall, m)
    assert "tool:shell" not in m.states and "global" not in m.states


def test_two_workers_decide_together_and_only_the_holder_of_partition_0_decides(cross_policy: Path) -> None:
    wall = Wall(time.time())
    w1, w2 = worker(cross_policy, wall, {0, 1}), worker(cross_policy, wall, {2, 3})
    w1.ingest(0, events("a0", wall.t, 80, 4))
    w1.ingest(1, events("a1", wall.t, 80, 4))
    w2.ingest(2, events("a2", wall.t, 80, 4))
    w2.ingest(3, events("a3", wall.t, 80, 4))
    # each worker alone holds 168 calls: below the 200-call minimum evidence
    tick(wall, w1, w2)
    assert "tool:shell" not in w1.states, "decided on half the evidence"
    share(w2, w1)
    share(w1, w2)
    tick(wall, w1, w2)
    assert w1.states["tool:shell"].state == "open"
    assert not w2.decides_cross() and w1.decides_cross()
    counts = w1.window_counts("tool:shell", 3600, w1.clock.now())
    assert counts["tool_calls"] == 320 and counts["incidents_critical"] == 16


def test_a_moved_partition_is_not_counted_twice(cross_policy: Path) -> None:
    wall = Wall(time.time())
    w1, w2 = worker(cross_policy, wall, {0, 1}), worker(cross_policy, wall, {2, 3})
    w1.ingest(0, events("a0", wall.t, 50, 0))
    w2.ingest(2, events("a2", wall.t, 70, 0))
    share(w2, w1)
    assert w1.window_counts("tool:shell", 3600, w1.clock.now())["tool_calls"] == 120
    # partition 2 moves to w1 (restored from its changelog): w1's own counts replace w2's record
    w1.set_assignment({0, 1, 2})
    w1.ingest(2, events("a2", wall.t, 70, 0))
    assert w1.window_counts("tool:shell", 3600, w1.clock.now())["tool_calls"] == 120
    # the worker without partition 0 never decides, even with open cross-agent states around
    w2.set_assignment({3})
    assert not w2.decides_cross()


def test_the_decider_waits_for_the_others_counts(cross_policy: Path) -> None:
    wall = Wall(time.time())
    w1 = worker(cross_policy, wall, {0, 1})
    w1.share_with_workers("tw")  # the decider starts out waiting for the others' partials
    w1.set_assignment({0, 1})
    w1.ingest(0, events("a0", wall.t, 300, 20))
    tick(wall, w1)
    assert "tool:shell" not in w1.states
    w1.partials_caught_up()
    tick(wall, w1)
    assert w1.states["tool:shell"].state == "open"


def test_published_partials_equal_the_partition_reads(cross_policy: Path) -> None:
    """The one-pass publisher agrees with reading each scope per partition, tenants included."""
    wall = Wall(time.time())
    m = worker(cross_policy, wall, {0, 1})
    m.ingest(0, events("a0", wall.t, 30, 2, tenant="acme"))
    m.ingest(0, events("b0", wall.t, 20, 1, tenant="beta"))
    m.ingest(1, events("c1", wall.t, 40, 3))
    m.ingest(1, events("drill-x", wall.t, 50, 5, drill=True))
    assert {"tool:shell", "global", "tenant:acme/global", "tenant:beta/global"} <= m.counts.cross_scopes
    now = m.clock.now()
    for p in (0, 1):
        published = m.partition_partials(p)
        for scope in m.counts.cross_scopes:
            for w, counts in published.get(scope, {}).items():
                assert counts == m.window_counts(scope, w, now, partition=p), (p, scope, w)
    assert m.partition_partials(0)["tenant:acme/global"][3600]["tool_calls"] == 30
    assert "tenant:acme/global" not in m.partition_partials(1)
    assert m.partition_partials(1)["global"][3600]["tool_calls"] == 40  # the drill agent is left out


def test_a_restored_agent_publishes_its_cross_agent_counts_before_its_next_event(cross_policy: Path) -> None:
    wall = Wall(time.time())
    before = worker(cross_policy, wall, {0})
    before.ingest(0, events("a0", wall.t, 30, 1))
    (part, key, value), = before.checkpoint()
    after = worker(cross_policy, wall, {0})  # a restart: state comes back from the changelog only
    after.restore(key, value)
    assert after.partition_partials(0)["tool:shell"][3600]["tool_calls"] == 30


def test_records_of_another_deployment_and_garbage_are_ignored(cross_policy: Path) -> None:
    wall = Wall(time.time())
    w1 = worker(cross_policy, wall, {0})
    w1.counts.remote.app_id = "tw"
    w1.apply_partials(encode_partials("other-app", 1, {"tool:shell": {3600: {"tool_calls": 999.0}}}), b"other-app:1")
    w1.apply_partials(b"not zlib", b"tw:1")
    w1.apply_partials(None, b"tw:1")
    assert w1.counts.remote.records == {} and w1.counts.remote.unreadable == 1
    assert w1.window_counts("tool:shell", 3600, w1.clock.now())["tool_calls"] == 0
