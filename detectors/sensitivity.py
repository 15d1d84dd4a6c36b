"""Drift sensitivity: detection delay at the detector's false-alarm rate, on a synthetic replay.

Each trial replays ``n_before`` Bernoulli(``p0``) indicators then ``n_after``
Bernoulli(``p1``) through a fresh detector. Detections before the change are
false alarms; the delay is the number of post-change events until the first
detection after the change (missed if none). Deterministic given ``seed``.

>>> res = detection_delay(p0=0.05, p1=0.20, n_before=3000, n_after=3000, trials=3, seed=1)
>>> res.missed, res.median_delay < 1000
(0, True)
"""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from detectors.adwin import Adwin

__all__ = ["SensitivityResult", "detection_delay"]


@dataclass(frozen=True)
class SensitivityResult:
    """Summary over trials; delays in events after the change."""

    trials: int
    false_alarms: int
    false_alarms_per_10k: float
    detected: int
    missed: int
    mean_delay: Optional[float]
    median_delay: Optional[float]
    p90_delay: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _adwin() -> Adwin:
    return Adwin()


def detection_delay(
    make_detector: Callable[[], Any] = _adwin,
    *,
    p0: float = 0.05,
    p1: float = 0.10,
    n_before: int = 20_000,
    n_after: int = 5_000,
    trials: int = 20,
    seed: int = 0,
) -> SensitivityResult:
    """Replay a Bernoulli ``p0 -> p1`` shift ``trials`` times.

    ``make_detector()`` must return an object whose ``update(x)`` returns a
    truthy value on detection (like :class:`~detectors.adwin.Adwin`); for
    river detectors wrap ``lambda d: (d.update(x), d.drift_detected)[1]``.
    """
    rng = random.Random(seed)
    fa = 0
    delays: list[int] = []
    for _ in range(trials):
        det = make_detector()
        upd = det.update
        rnd = rng.random
        for _ in range(n_before):
            if upd(1.0 if rnd() < p0 else 0.0):
                fa += 1
        for j in range(n_after):
            if upd(1.0 if rnd() < p1 else 0.0):
                delays.append(j + 1)
                break
    det_n = len(delays)
    ds = sorted(delays)
    return SensitivityResult(
        trials=trials,
        false_alarms=fa,
        false_alarms_per_10k=fa / (trials * n_before) * 10_000 if n_before else 0.0,
        detected=det_n,
        missed=trials - det_n,
        mean_delay=statistics.fmean(ds) if ds else None,
        median_delay=statistics.median(ds) if ds else None,
        p90_delay=float(ds[min(len(ds) - 1, int(0.9 * len(ds)))]) if ds else None,
    )
