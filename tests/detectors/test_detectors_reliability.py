"""AgentReliability: tau-bench ground truth and hand-computed metrics."""

import json

import orjson
import pytest

from detectors import AgentReliability, ReliabilityConfig
from detectors.reliability import attempts_for_confidence, pass_at_k, pass_hat_k
from detectors.testing import Ev, ev_from_json

from helpers.support import shared_data

TAU = "taubench-airline-trace-v1.jsonl"


def _load_tau():
    r = AgentReliability()
    for line in shared_data(TAU).read_text().splitlines():
        obj = json.loads(line)
        r.update(ev_from_json(obj))
    return r


def test_taubench_pass_at_k_and_pass_hat_k():
    r = _load_tau()
    assert [round(r.pass_at_k(k), 4) for k in (1, 2, 3, 4)] == [0.42, 0.5667, 0.66, 0.72]
    assert [round(r.pass_hat_k(k), 4) for k in (1, 2, 3, 4)] == [0.42, 0.2733, 0.22, 0.20]
    rel = r.reliability()
    assert rel["tasks"] == 50
    assert r.families() == ["airline"]
    assert r.reliability("airline") == rel
    assert r.pass_at_k(5) is None
    m = r.mtbce()
    assert m["tool_calls"] == 1164 and m["incidents"] == 0 and m["mtbce_hours"] is None
    coc = r.cost_of_confidence()
    assert coc["p_success"] == 0.42 and coc["attempts_needed"] == 10
    st = orjson.loads(orjson.dumps(r.to_state()))
    assert AgentReliability.from_state(st).to_state() == r.to_state()


def test_unbiased_estimators():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 4) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert pass_hat_k(4, 2, 2) == pytest.approx(1 / 6)
    assert attempts_for_confidence(0.0, 0.99) is None
    assert attempts_for_confidence(1.0, 0.99) == 1
    assert attempts_for_confidence(0.5, 0.75) == 2
    assert attempts_for_confidence(0.9, 0.99) == 2


def test_attempt_numbers_dedupe_and_none():
    r = AgentReliability()
    r.update(Ev("task_outcome", 1, task_id="t", attempt=1, outcome="failure"))
    r.update(Ev("task_outcome", 2, task_id="t", attempt=1, outcome="success"))  # overwrite
    r.update(Ev("task_outcome", 3, task_id="t", attempt=None, outcome="failure"))  # -> attempt 2
    assert r.tasks["t"] == [0b11, 0b01]
    assert r.pass_at_k(1) == 0.5 and r.pass_hat_k(2) == 0.0


def test_lru_cap():
    r = AgentReliability(ReliabilityConfig(max_tasks=3))
    for i in range(5):
        r.update(Ev("task_outcome", i, task_id=f"t{i}", attempt=1, outcome="success"))
    r.update(Ev("task_outcome", 9, task_id="t2", attempt=2, outcome="success"))
    r.update(Ev("task_outcome", 10, task_id="t5", attempt=1, outcome="failure"))
    assert list(r.tasks) == ["t4", "t2", "t5"]
    assert r.c["evicted"] == 3


def test_mtbce_hand_computed():
    from scipy.stats import chi2

    r = AgentReliability(ReliabilityConfig(idle_gap_s=300))
    t = 1_000_000.0
    # 4 tool calls 60 s apart (180 s active), an idle hour (counts 300 s), 2 more calls 60 s apart
    times = [t, t + 60, t + 120, t + 180, t + 3780, t + 3840]
    for x in times:
        r.update(Ev("tool_call", x))
    r.update(Ev("incident", t + 3840, severity="high"))
    r.update(Ev("tool_call", t + 100))  # out of order: no exposure added
    m = r.mtbce()
    active_h = (180 + 300 + 60) / 3600
    assert m["active_hours"] == pytest.approx(active_h)
    assert m["incidents"] == 1 and m["tool_calls"] == 7
    assert m["mtbce_hours"] == pytest.approx(active_h)
    assert m["mtbce_seconds"] == pytest.approx(540)
    assert m["mtbce_hours_lower"] == pytest.approx(active_h / (chi2.ppf(0.975, 4) / 2))
    assert m["mtbce_hours_upper"] == pytest.approx(active_h / (chi2.ppf(0.025, 2) / 2))
    assert m["tool_calls_per_incident"] == 7


def test_intervene_to_success():
    r = AgentReliability()
    assert r.intervene_to_success() is None
    for i, (iv, out) in enumerate([(True, "success"), (True, "failure"), (True, "success"), (False, "failure"), (None, "success")]):
        r.update(Ev("task_outcome", i, task_id=f"t{i}", attempt=1, intervened=iv, outcome=out))
    assert r.intervene_to_success() == pytest.approx(2 / 3)


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


def test_cost_of_confidence():
    r = AgentReliability(ReliabilityConfig(hourly_rate_usd=120, confidence=0.99))
    r.update(Ev("llm_call", 1, cost_usd=1.5))
    r.update(Ev("tool_call", 2, cost_usd=0.5))
    r.update(Ev("escalation", 3, human_minutes=30))  # 60 USD
    r.update(Ev("task_outcome", 4, task_id="a", attempt=1, outcome="failure", cost_usd=2.0, human_minutes=30))  # totals: ignored
    r.update(Ev("task_outcome", 5, task_id="a", attempt=2, outcome="success"))
    c = r.cost_of_confidence()
    assert c["spend_usd"] == pytest.approx(62.0)
    assert c["spend_per_success"] == pytest.approx(62.0)
    assert c["p_success"] == 0.5 and c["attempts_needed"] == 7  # 1 - 0.5^7 >= 0.99
    assert c["spend_to_confidence"] == pytest.approx(7 * 31.0)
    # task totals mode
    r2 = AgentReliability(ReliabilityConfig(task_totals=True))
    r2.update(Ev("llm_call", 1, cost_usd=1.5))
    r2.update(Ev("task_outcome", 4, task_id="a", attempt=1, outcome="success", cost_usd=2.0, human_minutes=6))
    assert r2.cost_of_confidence()["spend_usd"] == pytest.approx(14.0)
    assert AgentReliability().cost_of_confidence()["spend_per_success"] is None


def test_metrics_and_state_roundtrip():
    r = AgentReliability()
    for i in range(20):
        r.update(Ev("task_outcome", i, task_id=f"fam{i % 2}:t{i % 5}", attempt=i // 5 + 1, outcome="success" if i % 3 else "failure", intervened=i % 4 == 0))
        r.update(Ev("incident", i + 0.5))
    m = r.metrics()
    assert set(m) >= {"pass_at_k", "pass_hat_k", "mtbce", "intervene_to_success", "safe_refusal", "cost_of_confidence"}
    assert r.families() == ["fam0", "fam1"]
    assert r.pass_at_k(1, "fam0") is not None
    st = orjson.loads(orjson.dumps(r.to_state()))
    r2 = AgentReliability.from_state(st)
    assert r2.to_state() == r.to_state() and r2.metrics() == m
