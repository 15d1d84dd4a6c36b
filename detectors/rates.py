"""Rates with uncertainty: Wilson / Jeffreys intervals, Beta exceedance, Poisson (Garwood).

Read-time helpers (scipy is imported lazily, never on the per-event path). The one Wilson
score formula and the one normal quantile (:func:`z_value`) of the code base live here:
``breakers.evaluate`` (budgets' minimum evidence) and the worker's near-miss intervals use them.

>>> est = rate_estimate(10, 40, objective=0.05)
>>> round(est.rate, 3), round(est.lower, 4), round(est.upper, 4)
(0.25, 0.1419, 0.4019)
>>> est.p_exceeds > 0.999
True
>>> round(wilson_lower(10, 40, 0.95), 3)   # one-sided: what budgets' minimum evidence uses
0.156
>>> lo, hi = poisson_interval(0)
>>> lo, round(hi, 4)
(0.0, 3.6889)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Optional

__all__ = [
    "RateEstimate",
    "rate_estimate",
    "wilson_interval",
    "wilson_lower",
    "jeffreys_interval",
    "beta_exceedance",
    "poisson_interval",
    "z_value",
]

#: Jeffreys prior Beta(1/2, 1/2).
JEFFREYS = (0.5, 0.5)


@lru_cache(maxsize=64)
def z_value(confidence: float, sides: int = 2) -> float:
    """Standard-normal quantile of a ``confidence`` level, two-sided (1.96 for 0.95) or one-sided (1.645).

    >>> round(z_value(0.95), 3), round(z_value(0.95, sides=1), 3)
    (1.96, 1.645)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if sides == 2:
        return NormalDist().inv_cdf(0.5 + confidence / 2.0)
    if sides == 1:
        return NormalDist().inv_cdf(confidence)
    raise ValueError("sides must be 1 or 2")


def _wilson(k: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score bounds of ``k`` successes in ``n > 0`` trials at normal quantile ``z``."""
    p = min(max(k / n, 0.0), 1.0)
    z2 = z * z
    den = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / den
    half = z * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0)) / den
    return center - half, center + half


def wilson_interval(k: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval for ``k`` successes in ``n`` trials (``(0, 1)`` if ``n == 0``).

    >>> tuple(round(x, 4) for x in wilson_interval(1, 2))
    (0.0945, 0.9055)
    """
    if n <= 0:
        return (0.0, 1.0)
    lo, hi = _wilson(k, n, z_value(confidence))
    return (0.0 if k <= 0 else max(0.0, lo), 1.0 if k >= n else min(1.0, hi))


def wilson_lower(k: float, n: float, confidence: float) -> float:
    """One-sided Wilson score lower bound: the rate is above it with probability ``confidence``.

    >>> wilson_lower(0, 0, 0.95), 0 < wilson_lower(1, 2, 0.95) < 0.5
    (0.0, True)
    """
    if n <= 0:
        return 0.0
    return max(0.0, _wilson(k, n, z_value(confidence, sides=1))[0])


def jeffreys_interval(k: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Equal-tailed Beta(k+1/2, n-k+1/2) posterior interval (scipy)."""
    from scipy.special import betaincinv

    a, b = k + 0.5, n - k + 0.5
    alpha = 1.0 - confidence
    lo = 0.0 if k <= 0 else float(betaincinv(a, b, alpha / 2))
    hi = 1.0 if k >= n else float(betaincinv(a, b, 1 - alpha / 2))
    return (lo, hi)


def beta_exceedance(k: float, n: float, objective: float, prior: tuple[float, float] = JEFFREYS) -> float:
    """Posterior P(rate > objective) under Beta(prior) after ``k`` of ``n``.

    >>> round(beta_exceedance(0, 0, 0.5, prior=(1, 1)), 6)
    0.5
    """
    if objective <= 0.0:
        return 1.0
    if objective >= 1.0:
        return 0.0
    from scipy.special import betainc

    a, b = k + prior[0], (n - k) + prior[1]
    # P(X > x) for X ~ Beta(a, b) = I_{1-x}(b, a)
    return float(betainc(b, a, 1.0 - objective))


@dataclass(frozen=True, slots=True)
class RateEstimate:
    """Point estimate ``successes / trials`` with an interval and P(rate > objective)."""

    successes: float
    trials: float
    rate: float
    lower: float
    upper: float
    p_exceeds: Optional[float] = None


def rate_estimate(
    k: float,
    n: float,
    objective: Optional[float] = None,
    confidence: float = 0.95,
    method: str = "wilson",
    prior: tuple[float, float] = JEFFREYS,
) -> RateEstimate:
    """Rate ``k/n`` with a ``method`` (``"wilson"`` | ``"jeffreys"``) interval.

    ``p_exceeds`` is the Beta-posterior probability that the true rate is
    above ``objective`` (``None`` without an objective).
    """
    if k < 0 or n < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    rate = k / n if n else 0.0
    if method == "wilson":
        lo, hi = wilson_interval(k, n, confidence)
    elif method == "jeffreys":
        lo, hi = jeffreys_interval(k, n, confidence)
    else:
        raise ValueError(f"unknown method {method!r}")
    pe = None if objective is None else beta_exceedance(k, n, objective, prior)
    return RateEstimate(float(k), float(n), rate, lo, hi, pe)


def poisson_interval(k: float, confidence: float = 0.95) -> tuple[float, float]:
    """Garwood (chi-square) exact interval for a Poisson count ``k``.

    ``lower = chi2.ppf(a/2, 2k) / 2``, ``upper = chi2.ppf(1 - a/2, 2k + 2) / 2``.
    """
    from scipy.special import gammaincinv

    alpha = 1.0 - confidence
    lo = 0.0 if k <= 0 else float(gammaincinv(k, alpha / 2))
    hi = float(gammaincinv(k + 1, 1 - alpha / 2))
    return (lo, hi)
