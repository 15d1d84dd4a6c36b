"""Poisson window rules (``poisson_alpha``): validation, evaluation, and the tail against scipy."""
from __future__ import annotations

import math

import pytest
from scipy.stats import poisson

from breakers.evaluate import evaluate
from breakers.evidence import StaticEvidence
from breakers.policy import PolicyInvalid, check_policy_text, parse_policy
from detectors.poisson import min_count_to_fire, poisson_tail

from helpers.breakers import ALL_WINDOWS


def _policy(signal: str = "critical_incident_rate", rule: str = "{long: 1h, poisson_alpha: 0.001}",
            objective: float = 0.02, extra: str = "min_evidence: {min_calls: 0, min_bad: 3}") -> str:
    return (f"budgets:\n  - name: p\n    signal: {signal}\n    scopes: ['agent:*']\n    objective: {objective}\n"
            f"    windows: [{rule}]\n    {extra}\n")


@pytest.mark.parametrize("lam", [0.001, 0.12, 1.0, 3.98, 20.0, 250.0, 4000.0])
def test_tail_matches_scipy(lam: float) -> None:
    for k in sorted({0, 1, 2, 3, 5, int(lam), int(lam) + 1, int(lam * 1.5) + 3, int(lam * 3) + 10}):
        want = float(poisson.sf(k - 1, lam))  # P(X >= k) = P(X > k - 1)
        got = poisson_tail(k, lam)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (k, lam)


def test_tail_edges() -> None:
    assert poisson_tail(0, 3.0) == 1.0 and poisson_tail(-2, 3.0) == 1.0
    assert poisson_tail(1, 0.0) == 0.0 and poisson_tail(3, -1.0) == 0.0
    assert poisson_tail(3, math.inf) == 1.0 and poisson_tail(3, math.nan) == 1.0  # never fires on bad input
    assert poisson_tail(2.9, 1.0) == poisson_tail(2, 1.0)
    with pytest.raises(ValueError):
        min_count_to_fire(1.0, 0.0)
    for lam in (0.0, 0.5, 4.0, 60.0):
        k = min_count_to_fire(lam, 0.001)
        assert poisson_tail(k, lam) < 0.001 <= poisson_tail(k - 1, lam) or k == 1


def test_rule_needs_exactly_one_test() -> None:
    both = check_policy_text(_policy(rule="{long: 1h, burn_rate: 1, poisson_alpha: 0.01}"))
    neither = check_policy_text(_policy(rule="{long: 1h}"))
    for errs in (both, neither):
        assert len(errs) == 1 and "exactly one of burn_rate and poisson_alpha" in errs[0].message
        assert errs[0].path == "budgets[0].windows[0]"
    assert "less than or equal to 0.5" in check_policy_text(_policy(rule="{long: 1h, poisson_alpha: 0.9}"))[0].message


@pytest.mark.parametrize("signal,objective", [("weighted_near_miss_rate", 0.1), ("cost", 100.0)])
def test_poisson_needs_a_count_signal(signal: str, objective: float) -> None:
    with pytest.raises(PolicyInvalid, match="poisson_alpha needs a count signal"):
        parse_policy(_policy(signal=signal, objective=objective))


def test_fires_on_an_improbable_count_without_min_calls() -> None:
    p = parse_policy(_policy())
    ev = StaticEvidence().set_all("agent:a", ALL_WINDOWS, tool_calls=6, incidents_critical=5)
    (v,) = evaluate(p, "agent:a", ev)
    assert v.fired and v.action == "open" and v.rule == "P<0.001 over 1h"
    assert v.reason.startswith("critical-incident count 5 improbable at the objective: P(X≥5 | λ=0.12) = 1.9e-07")
    assert v.burn_rates["1h"] == pytest.approx((5 / 6) / 0.02)  # the exported burn figure is unchanged


def test_min_bad_holds_even_with_no_exposure() -> None:
    p = parse_policy(_policy())
    (v,) = evaluate(p, "agent:a", StaticEvidence().set_all("agent:a", ALL_WINDOWS, incidents_critical=2))
    assert not v.fired and "minimum evidence not met: only 2 bad events (< 3)" in v.reason


def test_short_window_must_agree() -> None:
    p = parse_policy(_policy(rule="{long: 1h, short: 5m, poisson_alpha: 0.001}"))
    ev = StaticEvidence().set("agent:a", 3600, tool_calls=10, incidents_critical=5)
    ev.set("agent:a", 300, tool_calls=10, incidents_critical=1)  # the incidents are not recent
    (v,) = evaluate(p, "agent:a", ev)
    assert not v.fired
    ev.set("agent:a", 300, tool_calls=2, incidents_critical=4)
    (v,) = evaluate(p, "agent:a", ev)
    assert v.fired and v.rule == "P<0.001 over 1h+5m"


def test_incident_count_uses_objective_per_period() -> None:
    # objective 30 incidents per 30 days → λ = 30 × 3600 / 2592000 = 0.0417 per hour
    p = parse_policy(_policy(signal="incident_count", objective=30, extra="min_evidence: {min_bad: 3}"))
    fired = evaluate(p, "agent:a", StaticEvidence().set("agent:a", 3600, incidents=3))[0]
    quiet = evaluate(p, "agent:a", StaticEvidence().set("agent:a", 3600, incidents=2))[0]
    assert fired.fired and "λ=0.0417" in fired.reason
    assert not quiet.fired
