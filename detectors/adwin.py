"""ADWIN change detector (river's Rust core) with before/after levels and JSON state.

Wraps the ``AdaptiveWindowing`` core behind :class:`river.drift.ADWIN`
(river 0.26). Unlike the river wrapper it does **not** reset after a
detection: like the original ADWIN it keeps the recent sub-window, so the
level after the change is known right away and detection continues.

State round-trip: the Rust core supports pickling through
``__getstate__()`` (its windows as bytes) / ``__setstate__(bytes)``; the
bytes are stored base64 in the JSON state, together with the constructor
parameters and the river version. Loading bytes from another river version
raises :class:`~detectors.base.StateError` (callers may start afresh).

>>> import random
>>> rng = random.Random(7)
>>> ad = Adwin()
>>> hits = []
>>> for i in range(4000):
...     p = 0.05 if i < 2000 else 0.30
...     r = ad.update(1.0 if rng.random() < p else 0.0)
...     if r: hits.append((i, round(r[0], 2), round(r[1], 2)))
>>> hits[0][0] > 2000, hits[0][1] < 0.1, hits[0][2] > hits[0][1]
(True, True, True)
>>> Adwin.from_state(ad.to_state()).to_state() == ad.to_state()
True
"""

from __future__ import annotations

import base64
import math
from typing import Any, Mapping, Optional

import river
# the Rust core river.drift.ADWIN wraps; importing river.drift would load KSWIN and scipy.stats (~0.7 s)
from river._river_rust.drift import AdaptiveWindowing as _Core

from detectors.base import Detector, StateError

__all__ = ["Adwin"]


class Adwin(Detector):
    """ADWIN on a real-valued stream. ``update(x)`` returns ``(before, after)`` on a change, else ``None``.

    ``before`` is the mean of the dropped (old) sub-window, ``after`` the mean
    of the kept (recent) one, in the units fed in. At the first cut after a
    change the kept window may still hold some pre-change values, so
    ``after`` understates the change; later cuts refine it.

    ``cooldown`` (default 0: off) absorbs the cuts of the ``cooldown`` updates after a
    reported change (ADWIN usually cuts a few times while it trims the old sub-window);
    ``cool`` counts down the updates left. Neither is part of :meth:`to_state`: a
    caller that sets a cooldown saves ``cool`` itself (``AgentDrift`` does).
    """

    __slots__ = ("_core", "_p", "cool", "cooldown", "n", "s")

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
        *,
        cooldown: int = 0,
    ) -> None:
        self._p = (float(delta), int(clock), int(max_buckets), int(min_window_length), int(grace_period))
        self._core = _Core(*self._p)
        self.n = 0  # width of the current window (mirrors the core)
        self.s = 0.0  # sum of the current window
        self.cooldown = int(cooldown)
        self.cool = 0

    def update(self, x: float) -> Optional[tuple[float, float]]:
        self.n += 1
        self.s += x
        if self._core.update(x):
            w = int(self._core.get_width())
            t = float(self._core.get_total())
            dn = self.n - w
            before = (self.s - t) / dn if dn > 0 else math.nan
            after = t / w if w else math.nan
            self.n, self.s = w, t
            if self.cool:
                self.cool -= 1
                return None
            self.cool = self.cooldown
            return (before, after)
        if self.cool:
            self.cool -= 1
        return None

    @property
    def width(self) -> int:
        return self.n

    @property
    def estimation(self) -> float:
        """Mean of the current window (0 when empty)."""
        return self.s / self.n if self.n else 0.0

    @property
    def n_detections(self) -> int:
        return int(self._core.get_n_detections())

    def to_state(self) -> dict[str, Any]:
        """``{"v", "p": [delta, clock, max_buckets, min_window_length, grace_period], "n", "s", "core", "rv"}``."""
        return {
            "v": self.STATE_VERSION,
            "p": list(self._p),
            "n": self.n,
            "s": self.s,
            "core": base64.b64encode(self._core.__getstate__()).decode("ascii"),
            "rv": river.__version__,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: Any = None) -> "Adwin":
        cls._check_version(state)
        self = cls(*state["p"])
        if state.get("rv") != river.__version__:
            raise StateError(f"ADWIN state from river {state.get('rv')}, running {river.__version__}")
        try:
            self._core.__setstate__(base64.b64decode(state["core"]))
        except Exception as exc:  # pragma: no cover - corrupt bytes
            raise StateError(f"cannot restore ADWIN core: {exc}") from exc
        self.n = int(state["n"])
        self.s = float(state["s"])
        return self
