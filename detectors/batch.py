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

    __slots__ = ("lay", "ints", "floats", "h0", "wm", "empty", "_rows", "_spans", "_nows", "_levels")

    def __init__(self, counts: Sequence[RollingCounts]) -> None:
        if not counts:
            raise ValueError("RingBatch needs at least one RollingCounts")
        lay = counts[0]._lay
        for rc in counts:
            if rc._lay is not lay:
                raise ValueError("RingBatch needs RollingCounts of one layout")
        self.lay = lay
        ftype = np.float32 if lay.ftc == "f" else np.float64
        rows = len(counts)
        # scopes × buckets × counters, as stored (one bytes.join per kind reads every ring's buffer); the few
        # buckets a window reads are widened (int64, float64) when gathered, never the whole rings
        self.ints = np.frombuffer(b"".join([rc._i for rc in counts]), dtype=np.uint32).reshape(rows, -1, NI)
        self.floats = np.frombuffer(b"".join([rc._f for rc in counts]), dtype=ftype).reshape(rows, -1, NF)
        self.empty = np.array([rc._h0 is None for rc in counts])
        self.h0 = np.array([-1 if rc._h0 is None else rc._h0 for rc in counts], dtype=np.int64)
        self.wm = np.array([rc._wm for rc in counts], dtype=np.float64)
        self._rows = np.arange(len(counts))[:, None]
        self._spans: dict[int, tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._nows: object = None  # the ``nows`` the cached spans were computed for (by identity)
        self._levels: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.h0)

    def _span(self, window_s: int, nows: Sequence[float] | np.ndarray
              ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(level, bucket index of each column (S × nb), is the column in the window, does the window reach
        the head bucket, the columns' bucket rows in the stacked rings); cached while ``nows`` is the same object."""
        if nows is not self._nows:
            self._spans.clear()
            self._nows = nows
        hit = self._spans.get(window_s)
        if hit is not None:
            return hit
        lay = self.lay
        j, nb = lay.cfg.window_level(window_s)
        g, n = lay.g[j], lay.n[j]
        now = np.maximum(np.asarray(nows, dtype=np.float64), self.wm)
        head = self.h0 if j == 0 else (self.h0 * lay.g0) // g
        lo = np.maximum(np.floor_divide(now, g).astype(np.int64) - nb, head - n) + 1
        cols = lo[:, None] + np.arange(nb)[None, :]
        reach = (lo <= head) & ~self.empty
        inside = (cols <= head[:, None]) & reach[:, None]
        buckets = lay.ibase[j] // NI + cols % n
        hit = self._spans[window_s] = (j, cols, inside, reach, buckets)
        return hit

    def _level(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Level ``j``'s rings of every scope as float64 (scopes × buckets × counters), ints then floats; cached."""
        hit = self._levels.get(j)
        if hit is None:
            lay = self.lay
            b0, n = lay.ibase[j] // NI, lay.n[j]
            hit = self._levels[j] = (self.ints[:, b0:b0 + n, :].astype(np.float64),
                                     self.floats[:, b0:b0 + n, :].astype(np.float64))
        return hit

    def window_sums(self, window_s: int, nows: Sequence[float] | np.ndarray, keys: Sequence[str]) -> np.ndarray:
        """(scopes × keys) window totals at each scope's ``now``: :meth:`RollingCounts.window_vector`'s figures."""
        cols = self.window_columns(window_s, nows, keys)
        return np.column_stack([cols[k] for k in keys]) if keys else np.empty((len(self.h0), 0))

    def window_columns(self, window_s: int, nows: Sequence[float] | np.ndarray, keys: Sequence[str]
                       ) -> dict[str, np.ndarray]:
        """key → window totals of every scope at its ``now`` (:meth:`window_sums`' columns, as views).

        One product per counter kind: a 0/1 mask of the window's slots (scopes × 1 × buckets) times the level's
        rings (scopes × buckets × counters). Integer counters are exact (float64 holds them); the two float
        counters are summed in another order than the per-scope read (see the module docstring).
        """
        lay = self.lay
        j, cols, inside, reach, _ = self._span(window_s, nows)
        n = lay.n[j]
        mask = np.zeros((len(self.h0), 1, n))
        mask[self._rows, 0, cols % n] = inside  # a window's columns are distinct slots (it spans at most the ring)
        out: dict[str, np.ndarray] = {}
        for kind, names in enumerate((INT_KEYS, FLOAT_KEYS)):
            want = [key for key in keys if key in names]
            if not want:
                continue
            total = np.matmul(mask, self._level(j)[kind])[:, 0, :]
            if j:  # a coarse level does not hold the fine head bucket yet: read adds it back
                total = total + np.where(reach[:, None], self._heads()[kind], 0.0)
            for key in want:
                out[key] = total[:, names.index(key)]
        return out

    def _heads(self) -> tuple[np.ndarray, np.ndarray]:
        """The fine head bucket of every scope as float64 (scopes × counters), ints then floats; cached."""
        hit = self._levels.get(-1)
        if hit is None:
            head0 = self.h0 % self.lay.L0
            rows = self._rows[:, 0]
            hit = self._levels[-1] = (self.ints[rows, head0].astype(np.float64),
                                      self.floats[rows, head0].astype(np.float64))
        return hit

    def window_expiry(self, window_s: int, nows: Sequence[float] | np.ndarray) -> np.ndarray:
        """Per scope, :meth:`RollingCounts.window_expiry`: when the window's oldest non-empty bucket leaves it."""
        lay = self.lay
        j, cols, inside, reach, buckets = self._span(window_s, nows)
        g = lay.g[j]
        _, nb = lay.cfg.window_level(window_s)
        events = self.ints[self._rows, buckets, _EVENTS_POS].astype(np.int64)
        if j:  # the fine head belongs to the head column of a coarse level
            head = (self.h0 * lay.g0) // g
            fine = self.ints[self._rows[:, 0], self.h0 % lay.L0, _EVENTS_POS].astype(np.int64)
            events = events + np.where(cols == head[:, None], fine[:, None], 0)
        busy = inside & (events > 0)
        first = busy.argmax(axis=1)
        at = (cols[np.arange(len(cols)), first] + nb) * g
        return np.where(busy.any(axis=1), at.astype(np.float64), np.inf)
