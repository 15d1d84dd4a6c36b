"""Independent reference computations for the reliability figures (issue #16 meaning tests).

They work from plain per-task outcome strings (``"FFS"``: failed twice, then succeeded), never
from the detector's data structures, so a test comparing the two checks the definition.

>>> truth_retry(["S", "FF", "FS"], 1, given_up=False)
0.3333333333333333
>>> truth_trials(["SF", "SS"], 2)
(1.0, 0.5)
"""

from __future__ import annotations

from itertools import combinations
from typing import Optional, Sequence


def truth_retry(seqs: Sequence[str], k: int, given_up: bool) -> Optional[float]:
    """Reliability@K for retries from the definition: success = an ``S`` among the first K attempts;
    known failure = K attempts seen without one, or the task was given up; else in flight (left out)."""
    ok = bad = 0
    for s in seqs:
        if "S" in s[:k]:
            ok += 1
        elif len(s) >= k or given_up:
            bad += 1
    return ok / (ok + bad) if ok + bad else None


def truth_trials(seqs: Sequence[str], k: int) -> tuple[float, float]:
    """(pass@k, pass^k) by enumerating every K-subset of each task's trials (tasks with >= K trials)."""
    at, hat = [], []
    for s in seqs:
        if len(s) < k:
            continue
        subs = list(combinations(s, k))
        at.append(sum("S" in c for c in subs) / len(subs))
        hat.append(sum(all(x == "S" for x in c) for c in subs) / len(subs))
    return sum(at) / len(at), sum(hat) / len(hat)


def truth_attempts_quantile(seqs: Sequence[str], confidence: float) -> float:
    """Least K such that at least ``confidence`` of the (finished) retried tasks succeeded within K
    attempts; ``inf`` when the share that ever succeeds is below ``confidence``."""
    firsts = sorted(s.index("S") + 1 for s in seqs if "S" in s)
    for k in range(1, (firsts[-1] if firsts else 0) + 1):
        if sum(f <= k for f in firsts) >= confidence * len(seqs) - 1e-9:
            return float(k)
    return float("inf")


def garwood(k: int, confidence: float = 0.95) -> tuple[float, float]:
    """Garwood Poisson interval from scipy's chi-square quantiles."""
    from scipy.stats import chi2

    a = 1 - confidence
    lo = 0.0 if k == 0 else chi2.ppf(a / 2, 2 * k) / 2
    return lo, chi2.ppf(1 - a / 2, 2 * k + 2) / 2
