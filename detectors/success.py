"""Performance drift: a two-proportion test on an agent's task success rate.

Stream: one bit per ``task_outcome`` event (1 = ``outcome: success``, 0 = ``failure``), in arrival
order: the *attempt* success rate (a retried task contributes one bit per attempt). The newest
``recent`` outcomes (default 50) are compared with the ``reference`` outcomes just before them
(default 100) by the pooled two-proportion z statistic

    z = (p_recent - p_ref) / sqrt(p (1 - p) (1 / n_ref + 1 / n_recent)),  p = (k_ref + k_recent) / (n_ref + n_recent)

and a report is made when ``|z| >= z`` (default 4.0; both directions, like every drift signal).
The report's ``before`` is ``p_ref`` and ``after`` is ``p_recent``, exactly: the success rates of
the two windows (``detail`` gives the counts). After a report the reference is emptied and refills
from the outcomes that follow, so the next test runs ``reference`` outcomes later, on post-change data.

Why not ADWIN (as the behaviour signals): task outcomes are low-volume (one per task, not one per
call) and ADWIN's Hoeffding-type cut is conservative at that volume: 100 outcomes at 90 % followed by
100 at 50 % (z ≈ 6) is never cut at ``delta = 0.002``. At ``z = 4.0`` this test finds a 90 % → 50 %
drop in a median of ~32 outcomes and raised ~1 false report per 100,000 stationary outcomes in
simulation (success rates 0.42–0.97); the tests run ``recent + reference`` outcomes long, overlapping,
so ``z`` is set far beyond a single test's 1.96.

>>> d = SuccessDrift()
>>> bits = [0 if i % 10 == 9 else 1 for i in range(100)] + [i % 2 for i in range(100)]
>>> reps = [r for i, b in enumerate(bits) if (r := d.update(bool(b), float(i))) is not None]
>>> [(r.signal, r.before, r.after, r.ts, r.detail) for r in reps]
[('task_success', 0.9, 0.5, 149.0, '90/100 -> 25/50')]
>>> SuccessDrift.from_state(d.to_state()).to_state() == d.to_state()
True
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Mapping, Optional

from detectors.base import Detector
from detectors.types import DriftReport

__all__ = ["DETECTOR", "SIGNAL", "SuccessDrift", "two_proportion_z"]

#: the drift signal (metric label) and detector name of task-success reports
SIGNAL = "task_success"
DETECTOR = "two_proportion_z"


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> float:
    """Pooled two-proportion z of ``k2/n2`` against ``k1/n1`` (0 when both rates are 0 or both 1).

    >>> round(two_proportion_z(90, 100, 25, 50), 3)   # a drop: negative
    -5.46
    """
    p = (k1 + k2) / (n1 + n2)
    var = p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)
    if var <= 0.0:
        return 0.0
    return (k2 / n2 - k1 / n1) / math.sqrt(var)


class SuccessDrift(Detector):
    """Reference vs recent window of task outcomes. ``update(success, ts) -> DriftReport | None``."""

    __slots__ = ("_ref", "_recent", "k_ref", "k_recent", "z")

    def __init__(self, reference: int = 100, recent: int = 50, z: float = 4.0) -> None:
        if reference < 1 or recent < 1 or not z > 0:
            raise ValueError("reference and recent must be >= 1 and z > 0")
        self._ref: deque[int] = deque(maxlen=int(reference))
        self._recent: deque[int] = deque(maxlen=int(recent))
        self.k_ref = 0
        self.k_recent = 0
        self.z = float(z)

    def update(self, success: Any, ts: float = 0.0) -> Optional[DriftReport]:  # type: ignore[override]
        """Feed one outcome (truthy = success); returns a report when the test rejects."""
        x = 1 if success else 0
        recent, ref = self._recent, self._ref
        if len(recent) == recent.maxlen:
            y = recent.popleft()
            self.k_recent -= y
            if len(ref) == ref.maxlen:
                self.k_ref -= ref[0]
            ref.append(y)
            self.k_ref += y
        recent.append(x)
        self.k_recent += x
        n_ref, n_rec = len(ref), len(recent)
        if n_ref < (ref.maxlen or 0) or n_rec < (recent.maxlen or 0):
            return None
        z = two_proportion_z(self.k_ref, n_ref, self.k_recent, n_rec)
        if abs(z) < self.z:
            return None
        rep = DriftReport(DETECTOR, SIGNAL, self.k_ref / n_ref, self.k_recent / n_rec, ts, abs(z),
                          f"{self.k_ref}/{n_ref} -> {self.k_recent}/{n_rec}")
        ref.clear()  # the next reference is post-change data
        self.k_ref = 0
        return rep

    def level(self) -> Optional[float]:
        """Success rate of the recent window (``None`` before the first outcome)."""
        return self.k_recent / len(self._recent) if self._recent else None

    @property
    def n(self) -> int:
        """Outcomes held (reference + recent)."""
        return len(self._ref) + len(self._recent)

    def to_state(self) -> dict[str, Any]:
        """``{"v", "ref": "0101…", "recent": "…"}`` (oldest first)."""
        return {"v": self.STATE_VERSION, "ref": "".join("1" if b else "0" for b in self._ref),
                "recent": "".join("1" if b else "0" for b in self._recent)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: Any = None) -> "SuccessDrift":
        """Rebuild with ``config``'s window sizes (a window resized by configuration keeps its newest bits)."""
        cls._check_version(state)
        self = cls(*_sizes(config))
        for b in str(state.get("ref", "")):
            self._ref.append(1 if b == "1" else 0)
        for b in str(state.get("recent", "")):
            self._recent.append(1 if b == "1" else 0)
        self.k_ref = sum(self._ref)
        self.k_recent = sum(self._recent)
        return self


def _sizes(config: Any) -> tuple[int, int, float]:
    if config is None:
        return (100, 50, 4.0)
    return (config.success_reference, config.success_recent, config.success_z)
