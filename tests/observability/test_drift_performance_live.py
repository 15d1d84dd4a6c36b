"""Meaning test on a running worker (real broker): a task-success drop and a model swap.

Fixed input: agent ``perf-*`` sends 200 task outcomes at 90 % (every 10th fails) then 200 alternating;
agent ``swap-*`` sends 10 ``llm_call`` on one model then 5 on another. The worker's ``/metrics`` and
``breaker-events`` must show exactly one ``task_success`` drift report with the figures of an independent
computation (the two windows' success rates, scipy's chi-square for |z|) and exactly one model change.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import orjson
import pytest
from scipy.stats import chi2_contingency

from helpers.e2e import event
from helpers.support import consume_all, start_worker, wait_for
from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process

pytestmark = pytest.mark.broker

DROP = [0 if i % 10 == 9 else 1 for i in range(200)] + [(i + 1) % 2 for i in range(200)]


def independent_first_report(bits: list[int]) -> tuple[int, float, float, float]:
    """First outcome i where |z| of the last 50 vs the 100 before them reaches 4 (z from scipy's chi-square)."""
    for i in range(149, len(bits)):
        ref, rec = bits[i - 149:i - 49], bits[i - 49:i + 1]
        chi2 = chi2_contingency([[sum(ref), 100 - sum(ref)], [sum(rec), 50 - sum(rec)]], correction=False)[0]
        if math.sqrt(chi2) >= 4.0:
            return i, sum(ref) / 100, sum(rec) / 50, math.sqrt(chi2)
    raise AssertionError("no report expected?")


def test_task_success_drop_and_model_swap_on_a_running_worker(broker: Any, tmp_path: Any, isolated_topics: Any) -> None:
    run = uuid.uuid4().hex[:6]
    perf, swap = f"perf-{run}", f"swap-{run}"
    w = start_worker(broker, tmp_path, isolated_topics, app_id=f"tw-{isolated_topics.prefix}",
                     extra_env={"TRIPWIRE_METRICS_CACHE_S": "0"})
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    try:
        t0 = time.time() - 60
        outcomes = [event(perf, "task_outcome", t0 + i * 0.1, outcome="success" if b else "failure",
                          task_id=f"task-{i}", attempt=1) for i, b in enumerate(DROP)]
        calls = [event(swap, "llm_call", t0 + i * 0.1, model="model-a" if i < 10 else "model-b",
                       latency_ms=800.0 if i < 10 else 200.0, input_tokens=100, output_tokens=50) for i in range(15)]
        for i in range(0, len(outcomes), 50):
            producer.send_batch(perf, outcomes[i:i + 50])
        producer.send_batch(swap, calls)
        producer.flush()
        wait_for(lambda: w.metric("tripwire_events_total") == 415, 60, "415 events counted")
        wait_for(lambda: w.metric("tripwire_model_changes_total", agent=swap) == 1, 30, "one model change")
        assert w.metric("tripwire_drift_detected_total", agent=perf, signal="task_success") == 1
        assert w.metric("tripwire_drift_detected_total", agent=perf) == 1  # no other signal moved
        assert w.metric("tripwire_model_changes_total", agent=perf) == 0

        i, before, after, z = independent_first_report(DROP)
        assert (i, before, after) == (233, 0.9, 0.62)

        def records() -> list[dict[str, Any]] | None:
            recs = [orjson.loads(m.value) for m in consume_all(broker.bootstrap, isolated_topics.breaker_events, 2,
                                                                timeout=5)]
            mine = [r for r in recs if r.get("agent") in (perf, swap) and r.get("type") in ("drift", "model_change")]
            return mine if len(mine) >= 2 else None

        recs = wait_for(records, 30, "the drift and model-change records on breaker-events")
        drift = [r for r in recs if r["type"] == "drift"]
        assert [(r["agent"], r["signal"], r["before"], r["after"], r["detail"]) for r in drift] == [
            (perf, "task_success", before, after, "90/100 -> 31/50")]
        assert drift[0]["statistic"] == pytest.approx(z, rel=1e-9)
        assert drift[0]["ts"] == pytest.approx(outcomes[i]["ts"] / 1000, abs=1e-3)
        [change] = [r for r in recs if r["type"] == "model_change"]
        assert (change["agent"], change["from"], change["to"], change["after"]) == (swap, "model-a", "model-b", None)
        assert change["ts"] == pytest.approx(calls[10]["ts"] / 1000, abs=1e-3)  # the new model's first event
        assert change["before"]["llm_latency_ms"] == pytest.approx(800.0)  # model-a's calls only
    finally:
        producer.close()
        stop_process(w.proc)  # type: ignore[arg-type]
