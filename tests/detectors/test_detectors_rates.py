"""Rates with uncertainty (the one Wilson score formula and z-value) and window labels."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import (
    poisson_interval,
    rate_estimate,
    wilson_interval,
    wilson_lower,
    window_label,
    z_value,
)
from detectors.rates import beta_exceedance, jeffreys_interval


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


def _old_one_sided_z(confidence):
    """breakers.evaluate's former quantile: bisection on erf (an independent computation)."""
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _old_wilson_lower(successes, n, confidence):
    if n <= 0:
        return 0.0
    p = min(max(successes / n, 0.0), 1.0)
    z = _old_one_sided_z(confidence)
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / denom)


def test_wilson_lower_is_the_former_budget_evidence_bound():
    for conf in (0.6, 0.8, 0.9, 0.95, 0.99, 0.999):
        assert z_value(conf, sides=1) == pytest.approx(_old_one_sided_z(conf), abs=1e-12)
        for n in (0, 1, 2, 5, 20, 40, 210, 1000):
            for k in sorted({0, 1, n // 3, n // 2, n}):
                assert wilson_lower(k, n, conf) == pytest.approx(_old_wilson_lower(k, n, conf), abs=1e-12)
    assert wilson_lower(10, 40, 0.95) < wilson_interval(10, 40, 0.90)[0] + 1e-12  # one-sided 95 % = two-sided 90 %
    with pytest.raises(ValueError):
        z_value(0.95, sides=3)


def test_window_labels():
    assert [window_label(w) for w in (300, 1800, 3600, 21600, 86400, 259200, 2592000)] == ["5m", "30m", "1h", "6h", "1d", "3d", "30d"]
