from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from breakers.evaluate import evaluate, wilson_lower
from breakers.evidence import EvidenceReader, StaticEvidence
from breakers.policy import parse_policy

from helpers.breakers import burst


def by_name(verdicts):
    return {v.budget: v for v in verdicts}


def test_static_evidence_satisfies_protocol():
    assert isinstance(StaticEvidence(), EvidenceReader)


def test_zero_flags_zero_incidents_never_fires_even_with_huge_volume(default_policy):
    for scope in ("agent:a", "agent:a/tool:shell", "agent:drill-1"):
        ev = burst(scope, tool_calls=10_000_000, llm_calls=5_000_000, cost_usd=1e6, events=2e7)
        ev.drift.add(scope)
        vs = evaluate(default_policy, scope, ev)
        assert vs and not any(v.fired for v in vs), [v.reason for v in vs]


def test_one_flag_in_two_calls_never_trips(default_policy):
    ev = burst("agent:a", tool_calls=2, near_misses=1, near_misses_weighted=10)  # one critical flag
    vs = by_name(evaluate(default_policy, "agent:a", ev))
    v = vs["weighted-near-miss"]
    assert not v.fired
    assert v.burn_rates["1h"] == pytest.approx(50.0)  # hot, but not enough evidence
    assert "minimum evidence not met" in v.reason
    assert not v.min_evidence_met


def test_ten_flags_in_forty_calls_can_escalate(default_policy):
    ev = burst("agent:a", tool_calls=40, near_misses=10, near_misses_weighted=50)  # 10 high flags (weight 5)
    v = by_name(evaluate(default_policy, "agent:a", ev))["weighted-near-miss"]
    # 50/40 = 1.25 → 12.5× of 0.10: not > 14.4 (1h rule) but > 6 (6h+30m rule)
    assert v.fired and v.action == "escalate" and v.severity == "page"
    assert v.rule == "6.0x over 6h+30m"
    assert v.reason.startswith("weighted near-miss burn 12.5× over 6h (>6.0) and 12.5× over 30m; 10 flags / 40 calls")


def test_fast_burn_page_reason_format(default_policy):
    ev = burst("agent:a", tool_calls=210, near_misses=41, near_misses_weighted=382.2)
    v = by_name(evaluate(default_policy, "agent:a", ev))["weighted-near-miss"]
    assert v.fired and v.rule == "14.4x over 1h+5m"
    assert v.reason == ("weighted near-miss burn 18.2× over 1h (>14.4) and 18.2× over 5m; "
                        "41 flags / 210 calls in 1h")
    assert set(v.evidence) == {"5m", "30m", "1h", "6h", "3d"}
    assert v.evidence["1h"]["tool_calls"] == 210
    # remaining is over the 30-day period (issue #16); the burst is all of the period's counts and a
    # StaticEvidence has no observed_s, so the whole period counts as observed: 1 - burn over 30d
    assert v.remaining_window_s == 2592000 and v.budget_remaining == 1.0  # nothing in the period window
    ev.set("agent:a", 2592000, tool_calls=210, near_misses=41, near_misses_weighted=382.2)
    v = by_name(evaluate(default_policy, "agent:a", ev))["weighted-near-miss"]
    assert v.budget_remaining == pytest.approx(1 - 18.2, abs=0.01)


def test_short_window_quiet_stops_firing(default_policy):
    ev = burst("agent:a", windows=(1800, 3600, 21600, 259200), tool_calls=210, near_misses=41,
               near_misses_weighted=382.2)
    ev.set("agent:a", 300, tool_calls=30, near_misses=0, near_misses_weighted=0)
    ev.set("agent:a", 1800, tool_calls=100, near_misses=1, near_misses_weighted=5)
    v = by_name(evaluate(default_policy, "agent:a", ev))["weighted-near-miss"]
    assert v.fired and v.action == "shadow" and v.severity == "ticket"  # only the slow-burn ticket remains


def test_critical_incident_rule(default_policy):
    scope = "agent:a/tool:payments.refund"
    # 5 critical of 200 calls = 2.5% > 2% → open
    v = by_name(evaluate(default_policy, scope, burst(scope, tool_calls=200, incidents=5, incidents_critical=5)))
    assert v["critical-incidents"].fired and v["critical-incidents"].action == "open"
    assert "critical-incident burn 1.2× over 1h (>1.0); 5 critical incidents / 200 calls in 1h" == \
        v["critical-incidents"].reason
    # exactly 2% does not exceed
    v = by_name(evaluate(default_policy, scope, burst(scope, tool_calls=200, incidents_critical=4)))
    assert not v["critical-incidents"].fired
    # 10% but fewer than 200 calls → not enough evidence
    v = by_name(evaluate(default_policy, scope, burst(scope, tool_calls=199, incidents_critical=20)))
    assert not v["critical-incidents"].fired and "199 calls" in v["critical-incidents"].reason


def test_drill_scopes_covered_by_same_rules(default_policy):
    scope = "agent:drill-7"
    v = by_name(evaluate(default_policy, scope, burst(scope, tool_calls=300, incidents_critical=30)))
    assert v["critical-incidents"].fired


def test_drift_needs_detector_and_corroboration(default_policy):
    ev = burst("agent:a", tool_calls=100, near_misses=1, near_misses_weighted=1)
    assert not by_name(evaluate(default_policy, "agent:a", ev))["drift"].fired
    ev.drift.add("agent:a")
    v = by_name(evaluate(default_policy, "agent:a", ev))["drift"]
    assert v.fired and v.action == "shadow"


def test_no_budgets_for_unmatched_scope(default_policy):
    assert evaluate(default_policy, "global", StaticEvidence()) == []


def _policy(extra: str):
    return parse_policy("budgets: [{name: b, scopes: ['agent:*'], " + extra + "}]")


def test_amount_signals_cost_and_incident_count():
    # $300 per 30 days → $10/day; 1h at 14.4× = $6 per hour
    p = _policy("signal: cost, objective: 300, min_evidence: {min_bad: 1}")
    ev = burst("agent:a", cost_usd=7.0)
    v = evaluate(p, "agent:a", ev)[0]
    assert v.burn_rates["1h"] == pytest.approx(7.0 / (300 * 3600 / 2592000))
    assert v.fired and v.reason.endswith("$7.00 in 1h")
    p = _policy("signal: incident_count, objective: 30, min_evidence: {min_bad: 1}, "
                "windows: [{long: 1d, burn_rate: 1}]")
    assert evaluate(p, "agent:a", StaticEvidence().set("agent:a", 86400, incidents=2))[0].fired
    assert not evaluate(p, "agent:a", StaticEvidence().set("agent:a", 86400, incidents=1))[0].fired


def test_error_rate_counts_tool_and_llm_calls():
    p = _policy("signal: error_rate, objective: 0.01")
    ev = burst("agent:a", tool_calls=50, llm_calls=50, errors=20)
    v = evaluate(p, "agent:a", ev)[0]
    assert v.burn_rates["1h"] == pytest.approx(20.0) and v.fired
    assert "20 errors / 100 calls" in v.reason


def test_confidence_gate():
    p = _policy("signal: near_miss_rate, objective: 0.1, min_evidence: {min_calls: 1, min_bad: 1, confidence: 0.99},"
                " windows: [{long: 1h, burn_rate: 1}]")
    # 3/10 = 30% > 10%, but not at 99% confidence with n=10
    assert not evaluate(p, "agent:a", StaticEvidence().set("agent:a", 3600, tool_calls=10, near_misses=3))[0].fired
    assert evaluate(p, "agent:a", StaticEvidence().set("agent:a", 3600, tool_calls=1000, near_misses=300))[0].fired


def test_wilson_lower_bounds():
    assert wilson_lower(0, 0, 0.95) == 0.0
    assert 0 < wilson_lower(1, 2, 0.95) < 0.5
    assert wilson_lower(300, 1000, 0.95) == pytest.approx(0.277, abs=0.005)


def test_missing_keys_and_zero_calls_are_zero_burn(default_policy):
    class Sparse:
        def window_counts(self, scope, window_s):
            return {}

        def drift_active(self, scope):
            return False

    vs = evaluate(default_policy, "agent:a", Sparse())
    assert not any(v.fired for v in vs)
    assert all(b == 0 for v in vs for b in v.burn_rates.values())


def test_window_counts_called_once_per_window(default_policy):
    calls = []

    class Counting(StaticEvidence):
        def window_counts(self, scope, window_s):
            calls.append(window_s)
            return super().window_counts(scope, window_s)

    evaluate(default_policy, "agent:a", Counting())
    assert sorted(calls) == sorted(set(calls))


@settings(max_examples=200, deadline=None)
@given(calls=st.integers(0, 10_000), flags=st.integers(0, 10_000), crit=st.integers(0, 10_000))
def test_nothing_fires_without_bad_events_or_below_minimum(default_policy, calls, flags, crit):
    ev = burst("agent:a", tool_calls=calls, near_misses=flags, near_misses_weighted=10 * flags,
               incidents=crit, incidents_critical=crit)
    vs = by_name(evaluate(default_policy, "agent:a", ev))
    if flags < 5 or calls < 20:
        assert not vs["weighted-near-miss"].fired
    if crit == 0 or calls < 200:
        assert not vs["critical-incidents"].fired


def test_min_bad_gate_on_its_own(default_policy):
    # 4 flags in 20 calls burns 10× (> 6×) but needs 5 flags; 5 in 25 (also 10×) fires
    v = by_name(evaluate(default_policy, "agent:a", burst("agent:a", tool_calls=20, near_misses=4,
                                                            near_misses_weighted=20)))["weighted-near-miss"]
    assert not v.fired and "only 4 bad events" in v.reason
    v = by_name(evaluate(default_policy, "agent:a", burst("agent:a", tool_calls=25, near_misses=5,
                                                            near_misses_weighted=25)))["weighted-near-miss"]
    assert v.fired


def test_one_in_two_never_trips_even_without_min_calls():
    p = _policy("signal: near_miss_rate, objective: 0.001, min_evidence: {min_calls: 0}")
    assert not evaluate(p, "agent:a", burst("agent:a", tool_calls=2, near_misses=1))[0].fired
    assert evaluate(p, "agent:a", burst("agent:a", tool_calls=40, near_misses=10))[0].fired


# ------------------------------------------------------------------ the engine's lean evaluation decides the same
_WINDOWS = (300, 1800, 3600, 21600, 259200)
_counts_st = st.fixed_dictionaries({
    "tool_calls": st.integers(0, 400), "llm_calls": st.integers(0, 100), "near_misses": st.integers(0, 120),
    "near_misses_weighted": st.integers(0, 600), "incidents": st.integers(0, 30),
    "incidents_critical": st.integers(0, 30), "errors": st.integers(0, 100),
    "cost_usd": st.floats(0, 500, allow_nan=False)})


@settings(max_examples=300, deadline=None)
@given(per_window=st.lists(_counts_st, min_size=len(_WINDOWS), max_size=len(_WINDOWS)), drift=st.booleans(),
       scope=st.sampled_from(["agent:a", "agent:a/tool:shell"]))
def test_lean_evaluation_decides_what_the_full_one_does(default_policy, per_window, drift, scope):
    """``detail=False, figures=False`` (the backtest) and ``detail=False`` (the worker's first pass) give the
    fired flag, action and severity of the full evaluation, and its burn rates whenever the budget fires
    (what :func:`breakers.state_machine.step` reads); ``detail=False`` keeps every /metrics figure."""
    ev = StaticEvidence()
    for w, counts in zip(_WINDOWS, per_window):
        ev.set(scope, w, **counts)
    if drift:
        ev.drift.add(scope)
    full = evaluate(default_policy, scope, ev)
    lean = evaluate(default_policy, scope, ev, detail=False)
    bare = evaluate(default_policy, scope, ev, detail=False, figures=False)
    for f, l, b in zip(full, lean, bare):
        assert (f.fired, f.action, f.severity) == (l.fired, l.action, l.severity) == (b.fired, b.action, b.severity)
        assert (l.burn_rates, l.budget_remaining, l.evidence_sufficient) == (
            f.burn_rates, f.budget_remaining, f.evidence_sufficient)
        if f.fired:
            assert b.burn_rates == f.burn_rates


@settings(max_examples=150, deadline=None)
@given(scopes=st.lists(st.tuples(st.lists(_counts_st, min_size=len(_WINDOWS), max_size=len(_WINDOWS)), st.booleans()),
                       min_size=1, max_size=12),
       scope=st.sampled_from(["agent:a", "agent:a/tool:shell"]))
def test_the_screen_is_never_wrong_when_it_is_sure(default_policy, scopes, scope):
    """breakers.screen: a decided scope fires exactly the actions evaluate() fires (None = not sure, allowed)."""
    import numpy as np

    from breakers.screen import needed_sums, screen

    budgets = default_policy.budgets_for(scope)
    need = needed_sums(budgets)
    sums = {w: {k: np.array([float(per_window[_WINDOWS.index(w)][k]) for per_window, _ in scopes]) for k in keys}
            for w, keys in need.items()}
    got = screen(budgets, sums, np.array([drift for _, drift in scopes]))
    for (per_window, drift), decided in zip(scopes, got):
        ev = StaticEvidence()
        for w, counts in zip(_WINDOWS, per_window):
            ev.set(scope, w, **counts)
        if drift:
            ev.drift.add(scope)
        want = frozenset(v.action for v in evaluate(default_policy, scope, ev) if v.fired)
        if decided is not None:
            assert decided == want, (decided, want, per_window)


def test_the_screen_decides_clear_cases(default_policy):
    """Far from every threshold the screen is sure (else it would save nothing)."""
    import numpy as np

    from breakers.screen import needed_sums, screen

    budgets = default_policy.budgets_for("agent:a")
    quiet = {"tool_calls": 300.0, "llm_calls": 0.0, "near_misses": 2.0, "near_misses_weighted": 2.0, "incidents": 0.0,
             "incidents_critical": 0.0, "errors": 0.0, "cost_usd": 0.0}
    slow = dict(quiet, near_misses=40.0, near_misses_weighted=45.0)  # ~0.15 per call: the 3d slow-burn (shadow)
    rows = [quiet, slow]
    sums = {w: {k: np.array([r[k] for r in rows]) for k in keys} for w, keys in needed_sums(budgets).items()}
    assert screen(budgets, sums, np.array([False, False])) == [frozenset(), frozenset({"shadow"})]
