"""Meaning test on a running worker (real broker), issue #16: budget remaining over the period, decision latency.

Fixed input: agent ``hist-*`` sends three-plus days of history exactly at its near-miss objective (100 calls
and 1 flag an hour, from a day boundary to now); agent ``idle-*`` sends one burst (20 calls, 10 flags) that
puts its breaker in ``shadow``, then idles while the worker keeps re-evaluating it. The worker's ``/metrics``
must show ``1 − burn × observed / 30 d`` (burn exactly 1) for the first, computed here independently, and
exactly one decision-latency sample for the second, however many re-evaluations follow.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from helpers.e2e import event
from helpers.support import start_worker, wait_for
from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process

pytestmark = pytest.mark.broker

DAY = 86400
PERIOD = 30 * DAY


def test_budget_remaining_and_decision_latency_on_a_running_worker(broker: Any, tmp_path: Any,
                                                                   isolated_topics: Any) -> None:
    run = uuid.uuid4().hex[:6]
    hist, idle = f"hist-{run}", f"idle-{run}"
    policy = tmp_path / "policy.yaml"
    policy.write_text("""
budgets:
  - name: nm
    signal: near_miss_rate
    scopes: ["agent:hist-*"]
    objective: 0.01
    period: 30d
  - name: watch
    signal: near_miss_rate
    scopes: ["agent:idle-*"]
    objective: 0.01
    windows: [{long: 1h, short: 5m, burn_rate: 14.4, severity: page}]
    min_evidence: {min_calls: 10, min_bad: 3}
    action: shadow
    clear_after: 1d
""")
    w = start_worker(broker, tmp_path, isolated_topics, app_id=f"tw-{isolated_topics.prefix}",
                     extra_env={"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_POLICY_FILE": str(policy),
                                # the harsher case for "one sample per decision": the old rule, which
                                # re-evaluates the idle breaker on every tick (the default re-checks it only
                                # when a window or timer can change: streams/engine/rechecks.py)
                                "TRIPWIRE_ENGINE__EVALUATE_UNCHANGED": "true"})
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    try:
        now = time.time()
        start = (now - 3 * DAY) - (now - 3 * DAY) % DAY  # a day boundary 3-4 days ago
        history = []
        hours = int((now - 120 - start) // 3600) + 1
        for h in range(hours):
            ts = start + h * 3600
            history += [event(hist, "tool_call", ts, tool="search", status="ok") for _ in range(100)]
            history.append(event(hist, "monitor_flag", ts, tool="search", severity="high"))
        last_ts = time.time()  # a last hour's worth now: the agent's own clock (its newest event) is the wall clock
        history += [event(hist, "tool_call", last_ts, tool="search", status="ok") for _ in range(100)]
        history.append(event(hist, "monitor_flag", last_ts, tool="search", severity="high"))
        for i in range(0, len(history), 500):
            producer.send_batch(hist, history[i:i + 500])
        burst_ts = time.time()
        burst = [event(idle, "tool_call", burst_ts, tool="search", status="ok") for _ in range(20)]
        burst += [event(idle, "monitor_flag", burst_ts, tool="search", severity="high") for _ in range(10)]
        producer.send_batch(idle, burst)
        producer.flush()
        total = len(history) + len(burst)
        wait_for(lambda: w.metric("tripwire_events_total") == total, 90, f"{total} events counted")

        def shadowed() -> bool:
            r = httpx.get(f"{w.web}/v1/breakers/agent:{idle}", timeout=5)
            return r.status_code == 200 and r.json().get("state") == "shadow"

        wait_for(shadowed, 60, "the idle agent's breaker in shadow")
        published_by = time.time()

        # the idle scope is re-evaluated every tick (evaluate_unchanged): its remaining figure falls as its
        # observed span grows
        # (burn 50× over the period), so a change proves re-evaluations happened
        def remaining(agent: str, budget: str) -> float:
            return w.metric("tripwire_budget_remaining_ratio", budget=budget, scope=f"agent:{agent}")

        seen = [remaining(idle, "watch")]
        wait_for(lambda: seen.append(remaining(idle, "watch")) or len(set(seen)) >= 4
                 or w.metric("tripwire_decision_latency_seconds_count") > 1, 60,
                 "three re-evaluations of the idle shadow scope")
        assert w.metric("tripwire_decision_latency_seconds_count") == 1  # one decision, one sample
        assert 0.0 <= w.metric("tripwire_decision_latency_seconds_sum") <= published_by - burst_ts + 0.01

        # independent: the flags are exactly 1 % of the calls in every window (burn 1); the period's budget
        # is extrapolated from the observed span, from the day boundary the history starts at to the agent's now
        got = remaining(hist, "nm")
        at = time.time()
        # the agent's now is between its newest event (last_ts) and the scrape (at)
        truth_lo, truth_hi = 1 - (at - start) / PERIOD, 1 - (last_ts - start) / PERIOD
        assert truth_lo - 1e-9 <= got <= truth_hi + 1e-9, (got, truth_lo, truth_hi)
        assert 0.85 < got < 0.91  # 3-4 days of a 30-day budget spent at the objective (before: 0.0)
    finally:
        producer.close()
        stop_process(w.proc)  # type: ignore[arg-type]
