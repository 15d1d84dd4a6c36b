"""Window reads of many :class:`~detectors.counts.RollingCounts` at once (numpy), for a screening pass.

:meth:`RollingCounts.window_vector` reads one scope in ~10–20 µs of Python. An evaluator that must
look at hundreds of scopes per tick (a backtest replaying hours of a fleet) reads them all at once
here: one gather of every scope's rings, then a few array operations per window. The sums equal
the per-scope reads up to float rounding of the two float counters (``near_misses_weighted``,
``cost_usd``: summed in another order), so a caller that decides on them keeps a margin and falls
back to the exact per-scope read near a threshold (:mod:`breakers.screen`).

>>> from detectors.testing import Ev
>>> a, b = RollingCounts(), RollingCounts()
>>> t0 = 1_700_000_000.0
>>> for k in range(3):
...     _ = a.add_event(Ev("tool_call", t0 + 100 * k))
>>> _ = b.add_event(Ev("incident", t0, severity="critical"))
>>> batch = RingBatch([a, b])
>>> batch.window_sums(3600, [t0 + 250, t0 + 250], ["tool_calls", "incidents_critical"]).tolist()
[[3.0, 0.0], [0.0, 1.0]]
>>> a.window_vector(300, t0 + 250)[0], float(batch.window_sums(300, [t0 + 250] * 2, ["tool_calls"])[0, 0])
(3.0, 3.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detectors.counts import _EVENTS_POS, NF, NI, RollingCounts
from detectors.keys import FLOAT_KEYS, INT_KEYS

__all__ = ["RingBatch"]


class RingBatch:
    """The rings of several RollingCounts of one layout, stacked (a snapshot: later events are not seen)."""

    __slots__ = ("lay", "ints", "floats", "h0", "wm", "empty", "_rows")

    def __init__(self, counts: Sequence[RollingCounts]) -> None:
        if not counts:
            raise ValueError("RingBatch needs at least one RollingCounts")
        lay = counts[0]._lay
        for rc in counts:
            if rc._lay is not lay:
                raise ValueError("RingBatch needs RollingCounts of one layout")
        self.lay = lay
        ftype = np.float32 if lay.ftc == "f" else np.float64
        rows = len(counts)  # one copy of every ring (bytes.join reads the arrays' buffers), one array each
        self.ints = np.frombuffer(b"".join([rc._i for rc in counts]), dtype=np.uint32).reshape(rows, -1).astype(np.int64)
        self.floats = np.frombuffer(b"".join([rc._f for rc in counts]), dtype=ftype).reshape(rows, -1).astype(np.float64)
        self.empty = np.array([rc._h0 is None for rc in counts])
        self.h0 = np.array([-1 if rc._h0 is None else rc._h0 for rc in counts], dtype=np.int64)
        self.wm = np.array([rc._wm for rc in counts], dtype=np.float64)
        self._rows = np.arange(len(counts))[:, None]

    def __len__(self) -> int:
        return len(self.h0)

    def _span(self, window_s: int, nows: Sequence[float] | np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(level, bucket index of each column (S × nb), is the column in the window, does the window reach
        the head bucket)."""
        lay = self.lay
        j, nb = lay.cfg.window_level(window_s)
        g, n = lay.g[j], lay.n[j]
        now = np.maximum(np.asarray(nows, dtype=np.float64), self.wm)
        head = self.h0 if j == 0 else (self.h0 * lay.g0) // g
        lo = np.maximum(np.floor_divide(now, g).astype(np.int64) - nb, head - n) + 1
        cols = lo[:, None] + np.arange(nb)[None, :]
        reach = (lo <= head) & ~self.empty
        inside = (cols <= head[:, None]) & reach[:, None]
        return j, cols, inside, reach

    def window_sums(self, window_s: int, nows: Sequence[float] | np.ndarray, keys: Sequence[str]) -> np.ndarray:
        """(scopes × keys) window totals at each scope's ``now``: :meth:`RollingCounts.window_vector`'s figures."""
        lay = self.lay
        j, cols, inside, reach = self._span(window_s, nows)
        n = lay.n[j]
        slots = cols % n
        out = np.empty((len(self.h0), len(keys)), dtype=np.float64)
        head0 = (self.h0 % lay.L0)[:, None]
        for x, key in enumerate(keys):
            if key in INT_KEYS:
                arr, pos, width, base, base0 = self.ints, INT_KEYS.index(key), NI, lay.ibase[j], 0
            else:
                arr, pos, width, base, base0 = self.floats, FLOAT_KEYS.index(key), NF, lay.fbase[j], 0
            vals = arr[self._rows, base + slots * width + pos]
            total = np.where(inside, vals, 0).sum(axis=1)
            if j:  # a coarse level does not hold the fine head bucket yet: read adds it back
                total = total + np.where(reach, arr[self._rows[:, 0], base0 + head0[:, 0] * width + pos], 0)
            out[:, x] = total
        return out

    def window_expiry(self, window_s: int, nows: Sequence[float] | np.ndarray) -> np.ndarray:
        """Per scope, :meth:`RollingCounts.window_expiry`: when the window's oldest non-empty bucket leaves it."""
        lay = self.lay
        j, cols, inside, reach = self._span(window_s, nows)
        g, n = lay.g[j], lay.n[j]
        _, nb = lay.cfg.window_level(window_s)
        events = self.ints[self._rows, lay.ibase[j] + (cols % n) * NI + _EVENTS_POS]
        if j:  # the fine head belongs to the head column of a coarse level
            head = (self.h0 * lay.g0) // g
            fine = self.ints[self._rows[:, 0], (self.h0 % lay.L0) * NI + _EVENTS_POS]
            events = events + np.where(cols == head[:, None], fine[:, None], 0)
        busy = inside & (events > 0)
        first = busy.argmax(axis=1)
        at = (cols[np.arange(len(cols)), first] + nb) * g
        return np.where(busy.any(axis=1), at.astype(np.float64), np.inf)
