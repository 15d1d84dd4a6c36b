"""Poisson tail test for small counts: is ``k`` bad events improbable at an expected ``lam``?

Budgets' low-volume rule (``poisson_alpha`` in ``breakers.policy``) asks: if the scope behaved
exactly at its objective, how likely is a count this high? With exposure ``n`` (tool calls in
the window) and objective rate ``p``, the count is ~ Poisson(``lam = p * n``) and

    ``P(X >= k | lam) = 1 - sum_{i<k} exp(-lam) lam**i / i!``  = the regularized lower
    incomplete gamma function ``P(k, lam)``.

A rule fires when that tail is below ``alpha``: few events can fire when the exposure is small
(50 critical incidents in 199 calls; 3 in 9 calls at a 2% objective), and the count needed grows
with the exposure, so at high volume the ordinary rate rule is the one that fires.

Pure ``math``; series for ``lam < k + 1``, Lentz continued fraction otherwise (Numerical
Recipes' ``gammp``/``gammq`` split), so both tails are accurate down to ~1e-300.

>>> poisson_tail(0, 5.0), poisson_tail(3, 0.0)
(1.0, 0.0)
>>> round(poisson_tail(1, 1.0), 6)          # 1 - e^-1
0.632121
>>> f"{poisson_tail(50, 199 * 0.02):.1e}"   # 50 critical incidents in 199 calls at a 2% objective
'6.6e-37'
>>> min_count_to_fire(0.0, 0.001), min_count_to_fire(0.02 * 199, 0.001), min_count_to_fire(2.0, 0.001)
(1, 12, 9)
"""

from __future__ import annotations

import math

__all__ = ["poisson_tail", "min_count_to_fire"]

_EPS = 1e-16
_TINY = 1e-300
_MAX_ITER = 100_000


def poisson_tail(k: float, lam: float) -> float:
    """``P(X >= k)`` for ``X ~ Poisson(lam)``; ``k`` is rounded down to an integer.

    ``k <= 0`` → 1; ``lam <= 0`` (no exposure) → 0 for ``k >= 1``. Non-finite ``lam`` → 1
    (nothing is improbable under an unbounded expectation: the test never fires on bad input).
    """
    k = math.floor(k) if math.isfinite(k) else 0
    if k <= 0:
        return 1.0
    if not math.isfinite(lam):
        return 1.0
    if lam <= 0:
        return 0.0
    a = float(k)
    if lam < a + 1.0:
        return _lower_series(a, lam)
    return max(0.0, 1.0 - _upper_fraction(a, lam))


def _log_prefix(a: float, x: float) -> float:
    return a * math.log(x) - x - math.lgamma(a)


def _lower_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its power series (x < a + 1)."""
    term = total = 1.0 / a
    ap = a
    for _ in range(_MAX_ITER):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return min(1.0, total * math.exp(_log_prefix(a, x)))


def _upper_fraction(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by Lentz's continued fraction (x ≥ a + 1)."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return min(1.0, math.exp(_log_prefix(a, x)) * h)


def min_count_to_fire(lam: float, alpha: float, min_count: int = 1) -> int:
    """The smallest ``k >= min_count`` with ``P(X >= k | lam) < alpha`` (for docs and tables).

    >>> [min_count_to_fire(0.02 * n, 0.001, 3) for n in (0, 9, 10, 50, 100, 200, 1000)]
    [3, 3, 4, 6, 9, 12, 36]
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    k = max(1, int(min_count))
    lam = max(0.0, float(lam))
    # the tail decreases in k: skip ahead to the mean when the mean itself is not improbable
    if int(lam) > k and poisson_tail(int(lam), lam) >= alpha:
        k = int(lam)
    while poisson_tail(k, lam) >= alpha:
        k += 1
    return k
