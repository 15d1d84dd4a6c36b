"""Rates with uncertainty and multi-window burn-rate budgets."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import (
    BudgetSpec,
    BurnAlert,
    BurnRule,
    EvidenceRule,
    RollingCounts,
    budget_remaining,
    burn_rate,
    evaluate_budget,
    evaluate_counts,
    poisson_interval,
    rate_estimate,
    wilson_interval,
    window_label,
)
from detectors.rates import beta_exceedance, jeffreys_interval
from detectors.testing import Ev


def test_wilson_known_values():
    lo, hi = wilson_interval(10, 40)
    assert (round(lo, 4), round(hi, 4)) == (0.1419, 0.4019)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775


def test_rate_estimate_fields():
    est = rate_estimate(10, 40, objective=0.05)
    assert est.successes == 10 and est.trials == 40 and est.rate == 0.25
    assert est.p_exceeds == pytest.approx(beta_exceedance(10, 40, 0.05))
    assert est.p_exceeds > 0.999
    assert rate_estimate(0, 0).rate == 0.0 and rate_estimate(0, 0).p_exceeds is None
    with pytest.raises(ValueError):
        rate_estimate(3, 2)


def test_beta_exceedance_against_scipy():
    from scipy.stats import beta

    for k, n, x in [(3, 50, 0.05), (0, 10, 0.1), (20, 20, 0.9)]:
        assert beta_exceedance(k, n, x) == pytest.approx(beta.sf(x, k + 0.5, n - k + 0.5), rel=1e-9)
    assert beta_exceedance(1, 2, 0.0) == 1.0 and beta_exceedance(1, 2, 1.0) == 0.0


def test_jeffreys_interval():
    lo, hi = jeffreys_interval(10, 40)
    assert 0.13 < lo < 0.15 and 0.38 < hi < 0.41
    est = rate_estimate(10, 40, method="jeffreys")
    assert (est.lower, est.upper) == (lo, hi)


def test_min_evidence_rule():
    rule = EvidenceRule()  # min 30 trials, 3 successes, Wilson 95% lower bound > objective
    assert not rule.exceeded(1, 2, 0.05)
    assert rule.exceeded(10, 40, 0.05)
    assert not rule.exceeded(2, 40, 0.05)  # too few flags
    assert not rule.exceeded(3, 40, 0.05)  # lower bound 0.026 < 0.05
    strict = EvidenceRule(min_p_exceeds=0.999999)
    assert not strict.exceeded(10, 40, 0.12)


def test_poisson_garwood():
    from scipy.stats import chi2

    lo, hi = poisson_interval(5, 0.95)
    assert lo == pytest.approx(chi2.ppf(0.025, 10) / 2)
    assert hi == pytest.approx(chi2.ppf(0.975, 12) / 2)
    assert poisson_interval(0)[0] == 0.0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 500), st.integers(0, 500), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_interval_contains_rate(k, extra, conf):
    n = k + extra
    est = rate_estimate(k, n, confidence=conf)
    assert 0.0 <= est.lower <= est.rate + 1e-12 <= est.upper + 2e-12 <= 1.0 + 2e-12


# ---------------------------------------------------------------- budgets


def windows(**kw):
    return {int(w): c for w, c in kw.items()}


def test_default_rules_are_sre_workbook():
    spec = BudgetSpec("near_misses", "tool_calls", objective=0.01)
    rules = [(r.severity, r.long_window, r.short_window, r.threshold) for r in spec.rules]
    assert rules == [("page", 3600, 300, 14.4), ("page", 21600, 1800, 6.0), ("ticket", 259200, 21600, 1.0)]
    assert spec.period_s == 30 * 86400
    assert spec.windows == (300, 1800, 3600, 21600, 259200)


def test_ratio_burn_and_alerts():
    spec = BudgetSpec("near_misses", "tool_calls", objective=0.01)
    w = {
        300: {"near_misses": 2, "tool_calls": 10},  # 20x
        3600: {"near_misses": 15, "tool_calls": 100},  # 15x
        1800: {"near_misses": 7, "tool_calls": 100},  # 7x
        21600: {"near_misses": 70, "tool_calls": 1000},  # 7x
        259200: {"near_misses": 100, "tool_calls": 20000},  # 0.5x
    }
    st_ = evaluate_budget(spec, w, {"near_misses": 100, "tool_calls": 20000})
    assert st_.alerts == [
        BurnAlert("page", 3600, 300, pytest.approx(15.0), pytest.approx(20.0), 14.4),
        BurnAlert("page", 21600, 1800, pytest.approx(7.0), pytest.approx(7.0), 6.0),
    ]
    assert st_.severity == "page"
    assert st_.budget_remaining == pytest.approx(0.5)
    # short window cooled down: no page from the 1h/5m pair
    w[300] = {"near_misses": 0, "tool_calls": 10}
    assert [a.long_window for a in evaluate_budget(spec, w).alerts] == [21600]


def test_min_evidence_blocks_tiny_samples():
    spec = BudgetSpec("near_misses", "tool_calls", objective=0.05)
    tiny = {w: {"near_misses": 1, "tool_calls": 2} for w in (300, 1800, 3600, 21600, 259200)}
    assert evaluate_budget(spec, tiny).alerts == []
    enough = {w: {"near_misses": 10, "tool_calls": 40} for w in (300, 1800, 3600, 21600, 259200)}
    sev = {a.severity for a in evaluate_budget(spec, enough).alerts}
    assert sev == {"ticket"}  # burn 5: ticket only
    much = {w: {"near_misses": 30, "tool_calls": 40} for w in (300, 1800, 3600, 21600, 259200)}
    assert evaluate_budget(spec, much).severity == "page"


def test_absolute_signal_cost():
    spec = BudgetSpec("cost_usd", None, objective=3000.0)  # 3000 USD per 30 days = 100 USD/day
    day = 86400
    assert burn_rate(spec, {"cost_usd": 100.0}, day) == pytest.approx(1.0)
    w = {3600: {"cost_usd": 100.0}, 300: {"cost_usd": 10.0}, 1800: {"cost_usd": 20.0}, 21600: {"cost_usd": 160.0}, 259200: {"cost_usd": 160.0}}
    st_ = evaluate_budget(spec, w, {"cost_usd": 750.0})
    assert [(a.severity, a.long_window) for a in st_.alerts] == [("page", 3600), ("page", 21600)]
    assert st_.burn_rates[3600] == pytest.approx(100 / (3000 / 720))
    assert st_.budget_remaining == pytest.approx(0.75)


def test_absolute_incidents_min_bad():
    spec = BudgetSpec("incidents_critical", None, objective=1.0, min_bad=2)
    w = {x: {"incidents_critical": 1} for x in (300, 1800, 3600, 21600, 259200)}
    assert evaluate_budget(spec, w).alerts == []
    w = {x: {"incidents_critical": 2} for x in (300, 1800, 3600, 21600, 259200)}
    assert evaluate_budget(spec, w).severity == "page"


def test_budget_remaining_edges():
    spec = BudgetSpec("near_misses", "tool_calls", objective=0.1)
    assert budget_remaining(spec, {}) == 1.0
    assert budget_remaining(spec, {"near_misses": 30, "tool_calls": 100}) == pytest.approx(-2.0)
    assert burn_rate(spec, {}, 300) == 0.0


def test_custom_rules_and_missing_windows():
    spec = BudgetSpec("errors", "tool_calls", objective=0.1, rules=(BurnRule("page", 600, 60, 2.0),), evidence=EvidenceRule(min_trials=1, min_successes=1))
    st_ = evaluate_budget(spec, {600: {"errors": 50, "tool_calls": 100}})
    assert st_.alerts == []  # 60 s window missing -> zero burn
    st_ = evaluate_budget(spec, {600: {"errors": 50, "tool_calls": 100}, 60: {"errors": 5, "tool_calls": 10}})
    assert st_.severity == "page"


def test_evaluate_counts_from_rolling_counts():
    T0 = 86400.0 * 20834
    rc = RollingCounts()
    for k in range(600):
        rc.add_event(Ev("tool_call", T0 + k * 6))
        if k % 2 == 0:
            rc.add_event(Ev("monitor_flag", T0 + k * 6, severity="high"))
    st_ = evaluate_counts(BudgetSpec("near_misses", "tool_calls", objective=0.02), rc, T0 + 3600)
    assert st_.severity == "page"  # 50 % near-misses vs 2 % objective: burn 25 everywhere
    assert st_.burn_rates[3600] == pytest.approx(25.0)
    assert st_.budget_remaining == pytest.approx(1 - 300 / (0.02 * 600))


def test_window_labels():
    assert [window_label(w) for w in (300, 1800, 3600, 21600, 86400, 259200, 2592000)] == ["5m", "30m", "1h", "6h", "1d", "3d", "30d"]
    assert math.isclose(BudgetSpec("a", "b", 0.5).objective, 0.5)
    with pytest.raises(ValueError):
        BudgetSpec("a", "b", objective=0.0)
