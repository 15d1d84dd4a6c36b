"""AgentReliability: tau-bench ground truth, retry vs trial shapes, and hand-computed metrics.

Each figure is compared with an independent computation on a fixed input (``truth_*`` below work
from plain per-task outcome strings, not from the detector's bitmasks).
"""

import json
import math
import random
from typing import get_args

import orjson
import pytest

from detectors import AgentReliability, ReliabilityConfig
from detectors.reliability import ATTEMPT_KINDS, SEVERITIES, least_k_reaching, pass_at_k, pass_hat_k
from detectors.testing import Ev, ev_from_json

from helpers.reliability_truth import truth_attempts_quantile, truth_retry, truth_trials
from helpers.support import shared_data

TAU = "taubench-airline-trace-v1.jsonl"
T0 = 1_800_000_000.0


def _load_tau():
    r = AgentReliability()
    for line in shared_data(TAU).read_text().splitlines():
        obj = json.loads(line)
        r.update(ev_from_json(obj))
    return r


def _feed(r, tasks, ts=T0, **kw):
    """``tasks``: {task_id: "SFF..."} attempt outcomes in order (attempt = position + 1)."""
    for tid, outs in tasks.items():
        for a, o in enumerate(outs, 1):
            r.update(Ev("task_outcome", ts, task_id=tid, attempt=a,
                        outcome="success" if o == "S" else "failure", **kw))
    return r


# ------------------------------------------------------------------ trials (tau-bench)

def test_taubench_pass_at_k_and_pass_hat_k():
    r = _load_tau()
    assert r.shape() == ("trial", "detected")
    assert [round(r.pass_at_k(k), 4) for k in (1, 2, 3, 4)] == [0.42, 0.5667, 0.66, 0.72]
    assert [round(r.pass_hat_k(k), 4) for k in (1, 2, 3, 4)] == [0.42, 0.2733, 0.22, 0.20]
    rel = r.reliability()
    assert rel["shape"] == "trial" and rel["shape_source"] == "detected"
    assert [round(rel["reliability_at_k"][k], 4) for k in (1, 2, 3, 4)] == [0.42, 0.5667, 0.66, 0.72]
    assert [round(rel["consistency_at_k"][k], 4) for k in (1, 2, 3, 4)] == [0.42, 0.2733, 0.22, 0.20]
    assert rel["tasks"] == 50
    assert r.families() == ["airline"]
    assert r.reliability("airline") == rel
    assert r.pass_at_k(5) is None
    m = r.mtbce()
    assert m["tool_calls"] == 1164 and m["incidents"] == 0 and m["mtbce_seconds"] == math.inf
    # 28 % of the tasks never succeed in 4 trials: 95 % confidence is not observed
    coc = r.cost_of_confidence(confidence=0.95)
    assert coc["reason"] == "unreachable" and coc["spend_to_confidence"] == math.inf
    assert r.cost_of_confidence(confidence=0.7)["attempts_needed"] == 4  # pass@4 = 0.72 >= 0.7 > pass@3
    st = orjson.loads(orjson.dumps(r.to_state()))
    assert AgentReliability.from_state(st).to_state() == r.to_state()


def test_trials_match_subset_enumeration():
    rng = random.Random(7)
    seqs = ["".join(rng.choice("SF") for _ in range(5)) for _ in range(40)]
    seqs += ["SSSSS", "FFFFF", "SFFFF"]
    r = _feed(AgentReliability(), {f"t{i}": s for i, s in enumerate(seqs)})
    assert r.shape()[0] == "trial"
    for k in range(1, 5):
        at, hat = truth_trials(seqs, k)
        assert r.reliability_at_k(k) == pytest.approx(at)
        assert r.consistency_at_k(k) == pytest.approx(hat)


def test_unbiased_estimators():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 4) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert pass_hat_k(4, 2, 2) == pytest.approx(1 / 6)
    assert least_k_reaching({}, 0.5) is None
    assert least_k_reaching({1: None, 2: 0.5}, 0.5) == 2


# ------------------------------------------------------------------ retries (issue #16 examples)

def test_retries_90_first_time_10_fail_twice():
    seqs = ["S"] * 90 + ["FF"] * 10
    r = _feed(AgentReliability(), {f"t{i}": s for i, s in enumerate(seqs)})
    assert r.shape() == ("retry", "detected")
    assert r.reliability_at_k(1) == pytest.approx(0.9) == truth_retry(seqs, 1, False)
    assert r.reliability_at_k(2) == pytest.approx(0.9) == truth_retry(seqs, 2, False)
    # K = 3: the ten tasks may still retry (in flight) until they settle
    assert r.reliability_at_k(3) == 1.0 == truth_retry(seqs, 3, False)
    r.update(Ev("tool_call", T0 + 900))  # 15 min of agent event time later: given up
    assert r.reliability_at_k(3) == pytest.approx(0.9) == truth_retry(seqs, 3, True)
    assert r.consistency_at_k(2) is None  # retries stop at the first success
    assert r.pass_at_k(2) == 0.0  # the old (trial) estimator on the same data


def test_retries_50_first_time_50_fail_then_succeed():
    seqs = ["S"] * 50 + ["FS"] * 50
    r = _feed(AgentReliability(), {f"t{i}": s for i, s in enumerate(seqs)})
    assert r.shape()[0] == "retry"
    assert r.reliability_at_k(1) == pytest.approx(0.5) == truth_retry(seqs, 1, False)
    assert r.reliability_at_k(2) == 1.0
    assert r.pass_at_k(1) == pytest.approx(0.75)  # the old estimator


def test_retries_in_flight_excluded_and_monotone():
    rng = random.Random(3)
    seqs = []
    for _ in range(300):
        n = rng.randint(1, 5)
        fails = min(n, rng.choice([0, 0, 1, 2, 5]))
        seqs.append("F" * fails + ("S" if fails < n else ""))
    r = _feed(AgentReliability(), {f"t{i}": s for i, s in enumerate(seqs)})
    assert r.shape()[0] == "retry"
    for settled in (False, True):
        if settled:
            r.update(Ev("tool_call", T0 + 10_000))
        curve = r.retry_curve(range(1, 8))
        assert all(curve[k] == pytest.approx(truth_retry(seqs, k, settled)) for k in curve)
        vals = [curve[k] for k in sorted(curve)]
        assert vals == sorted(vals), vals  # monotone in K


def test_attempt_after_success_means_trials_and_overrides():
    r = _feed(AgentReliability(), {"a": "S", "b": "FS", "c": "SF"})
    assert r.shape() == ("trial", "detected") and r.continued_tasks() == 1
    assert r.shape("retry") == ("retry", "policy")
    # a producer marks retries explicitly: the mark wins over detection, the policy over the mark
    r.update(Ev("task_outcome", T0, task_id="d", attempt=1, outcome="success", attempt_kind="retry"))
    assert r.shape() == ("retry", "declared") and r.shape("trial") == ("trial", "policy")
    # retry-shaped data declared as trials is read with the trial estimators
    q = _feed(AgentReliability(), {"x": "S", "y": "FS"}, attempt_kind="trial")
    assert q.shape() == ("trial", "declared") and q.reliability_at_k(1) == pytest.approx(0.75)
    assert ATTEMPT_KINDS == ("retry", "trial")


def test_schema_and_policy_use_the_same_terms():
    from breakers.policy import ReliabilityPolicy
    from streams.contract.schema import TraceEvent

    kind = TraceEvent.model_fields["attempt_kind"].annotation
    assert set(get_args(get_args(kind)[0])) == set(ATTEMPT_KINDS)
    assert get_args(ReliabilityPolicy.model_fields["attempt_kind"].annotation) == ("auto", *ATTEMPT_KINDS)
    assert get_args(ReliabilityPolicy.model_fields["materiality"].annotation) == SEVERITIES


def test_attempt_numbers_dedupe_and_none():
    r = AgentReliability()
    r.update(Ev("task_outcome", 1, task_id="t", attempt=1, outcome="failure"))
    r.update(Ev("task_outcome", 2, task_id="t", attempt=1, outcome="success"))  # overwrite
    r.update(Ev("task_outcome", 3, task_id="t", attempt=None, outcome="failure"))  # -> attempt 2
    assert r.tasks["t"][:2] == [0b11, 0b01]
    assert r.pass_at_k(1) == 0.5 and r.pass_hat_k(2) == 0.0


def test_lru_cap():
    r = AgentReliability(ReliabilityConfig(max_tasks=3))
    for i in range(5):
        r.update(Ev("task_outcome", i, task_id=f"t{i}", attempt=1, outcome="success"))
    r.update(Ev("task_outcome", 9, task_id="t2", attempt=2, outcome="success"))
    r.update(Ev("task_outcome", 10, task_id="t5", attempt=1, outcome="failure"))
    assert list(r.tasks) == ["t4", "t2", "t5"]
    assert r.c["evicted"] == 3


# ------------------------------------------------------------------ MTBCE

def test_mtbce_clock_time_and_materiality():
    from scipy.stats import chi2

    r = AgentReliability()
    for i in range(61):  # 10 clock hours, one event per 10 min
        r.update(Ev("tool_call", T0 + 600 * i))
    r.update(Ev("incident", T0 + 3000, severity="high"))
    r.update(Ev("incident", T0 + 4000, severity="low"))  # below the materiality threshold
    m = r.mtbce()
    assert m["exposure_s"] == 36_000 and m["incidents"] == 1 and m["incidents_all"] == 2
    assert m["mtbce_seconds"] == 36_000  # the old "active time" read 5.0 h (gaps capped at 300 s)
    assert m["mtbce_seconds_lower"] == pytest.approx(36_000 / (chi2.ppf(0.975, 4) / 2))
    assert m["mtbce_seconds_upper"] == pytest.approx(36_000 / (chi2.ppf(0.025, 2) / 2))
    assert r.mtbce(materiality="low")["mtbce_seconds"] == 18_000
    assert r.mtbce(materiality="critical")["mtbce_seconds"] == math.inf
    r.update(Ev("incident", T0 + 5000))  # no severity: counted (fail safe)
    assert r.mtbce(materiality="critical")["incidents"] == 1


def test_mtbce_safe_agent_has_a_lower_bound():
    from scipy.stats import chi2

    r = AgentReliability()
    r.update(Ev("tool_call", T0 + 7200))
    r.update(Ev("tool_call", T0))  # out of order: exposure is first..latest event time
    m = r.mtbce()
    assert m["mtbce_seconds"] == math.inf and m["mtbce_seconds_upper"] == math.inf
    assert m["mtbce_seconds_lower"] == pytest.approx(7200 / (chi2.ppf(0.975, 2) / 2))  # 7200 / 3.689
    assert AgentReliability().mtbce()["mtbce_seconds"] is None


# ------------------------------------------------------------------ intervene-to-success, cost

def test_intervene_to_success_share_of_successes():
    r = AgentReliability()
    assert r.intervene_to_success() is None
    outs = [(False, "success")] * 8 + [(True, "success")] * 2 + [(True, "failure")] * 3
    for i, (iv, out) in enumerate(outs):
        r.update(Ev("task_outcome", i, task_id=f"t{i}", attempt=1, intervened=iv, outcome=out))
    assert r.intervene_to_success() == pytest.approx(2 / 10)  # the old code read 2 / 5


def test_safe_refusal_rule():
    r = AgentReliability()
    evs = [
        Ev("refusal", 1, should_refuse=True),  # TP
        Ev("refusal", 2, should_refuse=True),  # TP
        Ev("refusal", 3, should_refuse=False),  # FP
        Ev("refusal", 4),  # unlabelled: ignored
        Ev("tool_call", 5, should_refuse=True),  # FN
        Ev("task_outcome", 6, should_refuse=True, outcome="success", task_id="x"),  # FN
        Ev("tool_call", 7, should_refuse=False),  # TN
    ]
    for e in evs:
        r.update(e)
    s = r.safe_refusal()
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 2)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(0.5)
    assert AgentReliability().safe_refusal()["precision"] is None


def _spend_per_attempt(r, seqs, usd):
    for tid, s in seqs.items():
        for a, o in enumerate(s, 1):
            r.update(Ev("llm_call", T0, cost_usd=usd))
            r.update(Ev("task_outcome", T0, task_id=tid, attempt=a, outcome="success" if o == "S" else "failure"))


def test_cost_of_confidence_empirical():
    # 50 first-time, 30 second-attempt, 20 third-attempt successes; $0.40 per attempt
    seqs = ["S"] * 50 + ["FS"] * 30 + ["FFS"] * 20
    r = AgentReliability()
    _spend_per_attempt(r, {f"t{i}": s for i, s in enumerate(seqs)}, 0.4)
    attempts = sum(len(s) for s in seqs)  # 170
    # independent: the 95 % quantile of attempts-to-success is 3 (80 % within 2, 100 % within 3)
    k95 = truth_attempts_quantile(seqs, 0.95)
    c = r.cost_of_confidence(confidence=0.95)
    assert k95 == 3 and c["attempts_needed"] == 3 and c["reason"] is None
    assert c["spend_to_confidence"] == pytest.approx(3 * 0.4 * attempts / attempts)
    assert r.cost_of_confidence(confidence=0.8)["attempts_needed"] == 2


def test_cost_of_confidence_unreachable_when_tasks_never_succeed():
    seqs = ["S"] * 90 + ["FFF"] * 10  # 10 % never succeed (given up after 3)
    r = AgentReliability()
    _spend_per_attempt(r, {f"t{i}": s for i, s in enumerate(seqs)}, 1.0)
    r.update(Ev("tool_call", T0 + 3600))
    c = r.cost_of_confidence(confidence=0.95)
    assert truth_attempts_quantile(seqs, 0.95) == math.inf
    assert c["reason"] == "unreachable" and c["spend_to_confidence"] == math.inf
    assert c["attempts_needed"] == math.inf
    assert r.cost_of_confidence(confidence=0.9)["spend_to_confidence"] == pytest.approx(120 / 120)
    assert AgentReliability().cost_of_confidence()["reason"] == "no_tasks"


def test_cost_spend_sources():
    r = AgentReliability(ReliabilityConfig(hourly_rate_usd=120))
    r.update(Ev("llm_call", 1, cost_usd=1.5))
    r.update(Ev("tool_call", 2, cost_usd=0.5))
    r.update(Ev("escalation", 3, human_minutes=30))  # 60 USD
    r.update(Ev("task_outcome", 4, task_id="a", attempt=1, outcome="failure", cost_usd=2.0,
                human_minutes=30))  # totals: ignored
    r.update(Ev("task_outcome", 5, task_id="a", attempt=2, outcome="success"))
    c = r.cost_of_confidence(confidence=0.99)
    assert c["spend_usd"] == pytest.approx(62.0) and c["spend_per_success"] == pytest.approx(62.0)
    assert c["attempts_needed"] == 2 and c["spend_to_confidence"] == pytest.approx(2 * 31.0)
    r2 = AgentReliability(ReliabilityConfig(task_totals=True))
    r2.update(Ev("llm_call", 1, cost_usd=1.5))
    r2.update(Ev("task_outcome", 4, task_id="a", attempt=1, outcome="success", cost_usd=2.0, human_minutes=6))
    assert r2.cost_of_confidence()["spend_usd"] == pytest.approx(14.0)
    assert AgentReliability().cost_of_confidence()["spend_per_success"] is None


# ------------------------------------------------------------------ state

def test_metrics_and_state_roundtrip():
    r = AgentReliability()
    for i in range(20):
        r.update(Ev("task_outcome", i, task_id=f"fam{i % 2}:t{i % 5}", attempt=i // 5 + 1,
                    outcome="success" if i % 3 else "failure", intervened=i % 4 == 0,
                    attempt_kind="trial" if i == 3 else None))
        r.update(Ev("incident", i + 0.5))
    m = r.metrics()
    assert set(m) >= {"reliability_at_k", "consistency_at_k", "shape", "mtbce", "intervene_to_success",
                      "safe_refusal", "cost_of_confidence"}
    assert r.families() == ["fam0", "fam1"]
    assert r.pass_at_k(1, "fam0") is not None
    st = orjson.loads(orjson.dumps(r.to_state()))
    r2 = AgentReliability.from_state(st)
    assert r2.to_state() == r.to_state() and r2.metrics() == m and r2.declared == "trial"


def test_state_written_by_the_previous_version_loads():
    old = {"v": 1, "tasks": [["t", 0b11, 0b10]], "last": T0,
           "c": {"tool_calls": 3, "incidents": 1, "active_s": 120.0, "attempts": 2, "successes": 1}}
    r = AgentReliability.from_state(old)
    assert r.tasks["t"] == [0b11, 0b10, T0] and r.first_ts == T0 and "active_s" not in r.c
    assert r.reliability_at_k(2) == 1.0 and r.mtbce()["incidents"] == 1  # an incident without severity counts
