"""Meaning tests (issue #16): the reliability figures on ``/metrics`` of a running worker (real
broker) equal independent computations (tests/helpers/reliability_truth.py) on fixed inputs:
retry-shaped outcomes, independent trials, a producer's ``attempt_kind``, clock-time MTBCE with the
policy's materiality, intervene-to-success, and empirical cost of confidence (reachable and not)."""

from __future__ import annotations

import math
import random
import time
from itertools import count

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.reliability_truth import garwood, truth_attempts_quantile, truth_retry, truth_trials
from helpers.support import start_worker, wait_for
from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process

pytestmark = pytest.mark.broker

POLICY = "reliability:\n  materiality: medium\n  confidence: 0.95\n  retry_settle: 15m\n"
_ids = count()


def _ev(agent: str, ts: float, kind: str, **kw: object) -> dict:
    return {"schema_version": "1", "event_id": f"g1-{next(_ids)}", "ts": int(ts * 1000), "agent_id": agent,
            "kind": kind, **kw}


def _tasks(agent: str, ts: float, seqs: list[str], usd: float | None = None, **kw: object) -> list[dict]:
    out = []
    for i, s in enumerate(seqs):
        for a, o in enumerate(s, 1):
            if usd is not None:
                out.append(_ev(agent, ts, "llm_call", cost_usd=usd))
            out.append(_ev(agent, ts, "task_outcome", task_id=f"t{i}", attempt=a,
                           outcome="success" if o == "S" else "failure", **kw))
    return out


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_reliability_figures_on_metrics_equal_independent_computations(broker, tmp_path, isolated_topics) -> None:
    now = time.time()
    t = now - 36_000 - 1_200  # every event lies in the past (no clamping), the latest 20 min ago
    retry90 = ["S"] * 90 + ["FF"] * 10
    retry50 = ["S"] * 50 + ["FS"] * 50
    rng = random.Random(16)
    trials = ["".join(rng.choice("SSF") for _ in range(4)) for _ in range(30)] + ["SFFF", "FFFF"]
    cost_ok = ["S"] * 50 + ["FS"] * 30 + ["FFS"] * 20
    cost_never = ["S"] * 90 + ["FFF"] * 10
    batches = {
        "g1-retry90": _tasks("g1-retry90", t, retry90) + [_ev("g1-retry90", t + 1_000, "tool_call", tool="x")],
        "g1-retry50": _tasks("g1-retry50", t, retry50),
        "g1-trials": _tasks("g1-trials", t, trials),
        "g1-marked": _tasks("g1-marked", t, ["S", "FS"], attempt_kind="trial"),
        "g1-mtbce": [_ev("g1-mtbce", t + 600 * i, "tool_call", tool="x") for i in range(61)] + [
            _ev("g1-mtbce", t + 3_000, "incident", severity="high"),
            _ev("g1-mtbce", t + 4_000, "incident", severity="low"),  # below the policy's materiality
            _ev("g1-mtbce", t + 5_000, "incident", severity="medium")],
        "g1-safe": [_ev("g1-safe", t, "tool_call", tool="x"), _ev("g1-safe", t + 7_200, "tool_call", tool="x")],
        "g1-iv": [_ev("g1-iv", t, "task_outcome", task_id=f"t{i}", attempt=1, outcome=o, intervened=iv)
                  for i, (iv, o) in enumerate([(False, "success")] * 8 + [(True, "success")] * 2
                                               + [(True, "failure")] * 3)],
        "g1-cost": _tasks("g1-cost", t, cost_ok, usd=0.4),
        "g1-never": _tasks("g1-never", t, cost_never, usd=1.0) + [_ev("g1-never", t + 3_600, "tool_call", tool="x")],
    }
    sent = sum(len(b) for b in batches.values())
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    w = start_worker(broker, tmp_path, isolated_topics, app_id=f"tw-{isolated_topics.prefix}",
                     extra_env={"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_POLICY_FILE": str(policy)})
    try:
        producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
        for agent, evs in batches.items():
            evs.sort(key=lambda e: e["ts"])  # in event-time order: events past the lateness are not counted
            for i in range(0, len(evs), 100):
                producer.send_batch(agent, evs[i:i + 100])
        producer.flush()
        producer.close()
        wait_for(lambda: w.metric("tripwire_events_total") >= sent, 60, "all events counted")
        assert w.metric("tripwire_events_rejected_total") == 0
        m = _samples(w.metrics_text())

        def val(name: str, **labels: str) -> float | None:
            return m.get((name, frozenset(labels.items())))

        # Reliability@K, retries (issue examples): 0.9 / 0.9 and 0.5, shape label retry, no pass^k
        for k in range(1, 5):
            assert val("tripwire_reliability_at_k", agent="g1-retry90", k=str(k), shape="retry") == \
                pytest.approx(truth_retry(retry90, k, given_up=True)), k
            assert val("tripwire_reliability_at_k", agent="g1-retry50", k=str(k), shape="retry") == \
                pytest.approx(truth_retry(retry50, k, given_up=False)), k
            assert val("tripwire_consistency_at_k", agent="g1-retry90", k=str(k)) is None
        assert val("tripwire_reliability_at_k", agent="g1-retry90", k="2", shape="retry") == pytest.approx(0.9)
        assert val("tripwire_reliability_at_k", agent="g1-retry50", k="1", shape="retry") == pytest.approx(0.5)
        # independent trials (detected) and a producer's explicit attempt_kind
        for k in range(1, 5):
            at, hat = truth_trials(trials, k)
            assert val("tripwire_reliability_at_k", agent="g1-trials", k=str(k), shape="trial") == pytest.approx(at)
            assert val("tripwire_consistency_at_k", agent="g1-trials", k=str(k)) == pytest.approx(hat)
        assert val("tripwire_reliability_at_k", agent="g1-marked", k="1", shape="trial") == \
            pytest.approx(truth_trials(["S", "FS"], 1)[0])
        # MTBCE: 10 clock hours, 2 incidents at or above "medium" (the low one is not material)
        lo, hi = garwood(2)
        assert val("tripwire_mtbce_exposure_seconds", agent="g1-mtbce") == pytest.approx(36_000)
        assert val("tripwire_mtbce_seconds", agent="g1-mtbce") == pytest.approx(18_000)
        assert val("tripwire_mtbce_seconds_lower", agent="g1-mtbce") == pytest.approx(36_000 / hi)
        assert val("tripwire_mtbce_seconds_upper", agent="g1-mtbce") == pytest.approx(36_000 / lo)
        # a safe agent: +Inf point and upper bound, a finite lower bound
        assert val("tripwire_mtbce_seconds", agent="g1-safe") == math.inf
        assert val("tripwire_mtbce_seconds_upper", agent="g1-safe") == math.inf
        assert val("tripwire_mtbce_seconds_lower", agent="g1-safe") == pytest.approx(7_200 / garwood(0)[1])
        # intervene-to-success: 2 of 10 successes were intervened
        assert val("tripwire_intervene_to_success_ratio", agent="g1-iv") == pytest.approx(2 / 10)
        # cost of confidence: 95 % quantile of attempts-to-success x spend per attempt
        k95 = truth_attempts_quantile(cost_ok, 0.95)
        assert val("tripwire_cost_of_confidence_usd", agent="g1-cost") == pytest.approx(k95 * 0.4)
        assert val("tripwire_cost_of_confidence_undefined", agent="g1-cost", reason="unreachable") is None
        assert truth_attempts_quantile(cost_never, 0.95) == math.inf
        assert val("tripwire_cost_of_confidence_usd", agent="g1-never") == math.inf
        assert val("tripwire_cost_of_confidence_undefined", agent="g1-never", reason="unreachable") == 1.0
        assert val("tripwire_cost_of_confidence_undefined", agent="g1-mtbce", reason="no_tasks") == 1.0
    finally:
        stop_process(w.proc)
