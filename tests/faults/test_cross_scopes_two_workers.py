"""A ``tool:*`` budget decided across two workers on a real broker.

Four agents, one per trace partition, each send 80 shell calls and 4 critical incidents.
Each worker holds two partitions, so it sees 168 calls: below the budget's 200-call minimum
evidence. Together the workers have 336 calls with 16 critical incidents (4.8 %, objective
2 %). ``tool:shell`` must open. The counts travel over the ``scope-partials`` topic, and the
holder of partition 0 decides. The audit log must show exactly one opening, not one per
worker and not a flap.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from kafka.partitioner.default import murmur2

from helpers.faults import calls, incidents
from streams.ops.procutil import stop_process
from streams.kafka.producer import TraceProducer
from streams.settings import DEFAULT_POLICY
from helpers.support import consume_all, start_worker, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


def agent_per_partition(n: int, prefix: str) -> list[str]:
    """One agent id for each of ``n`` partitions (the producer's murmur2 key hashing)."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < n:
        agent = f"{prefix}-{i}"
        out.setdefault((murmur2(agent.encode()) & 0x7FFFFFFF) % n, agent)
        i += 1
    return [out[p] for p in range(n)]


def breaker(web: str, scope: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(f"{web}/v1/breakers/{scope}", timeout=5)
    return r.json() if r.status_code == 200 else {}


def test_tool_budget_opens_on_the_evidence_of_both_workers(broker, tmp_path: Path, isolated_topics) -> None:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    budget = next(b for b in doc["budgets"] if b["name"] == "critical-incidents")
    doc["budgets"] = [dict(budget, name="tool-critical-incidents", scopes=["tool:*"])]
    policy = tmp_path / "cross.yaml"
    policy.write_text(yaml.safe_dump(doc))
    app_id = f"tw-{isolated_topics.prefix}"
    env = {"TRIPWIRE_METRICS_CACHE_S": "0"}
    args = ["--policy", str(policy)]
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env, extra_args=args,
                      wait_ready=False)
    w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env, extra_args=args)
    try:
        wait_for(lambda: all("assigned 2 partitions of" in w.log.read_text(errors="replace") for w in (w1, w2)),
                 90, "both workers holding two partitions each")
        wait_for(lambda: all(w.metric("tripwire_worker_ready") == 1 for w in (w1, w2)), 60, "both workers ready")
        producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
        agents = agent_per_partition(4, f"cross-{uuid.uuid4().hex[:6]}")
        for agent in agents:
            producer.send_batch(agent, calls(agent, 80) + incidents(agent, 4))
        producer.flush()
        producer.close()

        for w in (w1, w2):
            wait_for(lambda: breaker(w.web, "tool:shell").get("state") == "open", 60,
                     f"tool:shell open as seen by {w.web}")
        # no agent scope is budgeted: the evidence is only the tool's, across both workers
        evidence = json.dumps(breaker(w1.web, "tool:shell"))
        assert "336" in evidence, evidence
        for agent in agents:
            r = httpx.get(f"{w2.web}/v1/authz", headers={"X-Agent-Id": agent, "X-Tool": "shell"}, timeout=5)
            assert r.status_code == 403 and r.headers["X-Tripwire-State"] == "open"
            ok = httpx.get(f"{w2.web}/v1/authz", headers={"X-Agent-Id": agent, "X-Tool": "search"}, timeout=5)
            assert ok.status_code == 200

        def openings() -> list[dict]:  # type: ignore[type-arg]
            recs = consume_all(broker.bootstrap, isolated_topics.breaker_events, expect=10_000, timeout=3)
            docs = [json.loads(r.value) for r in recs]
            return [d for d in docs if d.get("type") == "transition" and d.get("scope") == "tool:shell"]

        wait_for(openings, 20, "the tool:shell transition on breaker-events")
        # a few more evaluation ticks of both workers: still one transition, from one decider
        time.sleep(6)
        transitions = openings()
        assert [(t["from"], t["to"]) for t in transitions] == [("closed", "open")], transitions
        deciders = [w for w in (w1, w2) if "breaker tool:shell: closed -> open" in w.log.read_text(errors="replace")]
        assert len(deciders) == 1
        assert [w.metric("tripwire_cross_scope_decider") for w in (w1, w2)].count(1.0) == 1
        assert deciders[0].metric("tripwire_cross_scope_decider") == 1
    finally:
        stop_process(w1.proc)  # type: ignore[arg-type]
        stop_process(w2.proc)  # type: ignore[arg-type]
