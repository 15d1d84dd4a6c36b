"""Sparse per-fine-bucket count deltas, for cross-partition aggregation.

A :class:`CountsDelta` is what :meth:`RollingCounts.drain_delta
<detectors.counts.RollingCounts.drain_delta>` returns: the fine buckets
(``bucket index = ts // g0``) that received counts since the previous drain,
each as ``(ints, floats)`` in :data:`~detectors.counts.INT_KEYS` /
:data:`~detectors.counts.FLOAT_KEYS` order, plus the late-event count and the
source watermark. Deltas from many (agent, tool) scopes of a partition can be
summed with :meth:`CountsDelta.merge` before shipping (e.g. into one delta per
``tool:X``), then applied with ``RollingCounts.merge(delta)``.

>>> d = CountsDelta(g0=60)
>>> d.add(28333333, [1, 0, 0, 0, 0, 0, 0, 0, 1], [0.0, 0.25])
>>> e = CountsDelta.from_state(d.to_state())
>>> e.to_state() == d.to_state()
True
>>> d.merge(e); d.totals()["tool_calls"], d.totals()["cost_usd"]
(2.0, 0.5)
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

__all__ = ["CountsDelta"]

_INT_KEYS = (
    "tool_calls",
    "near_misses",
    "incidents",
    "incidents_critical",
    "errors",
    "refusals",
    "escalations",
    "llm_calls",
    "events",
)
_FLOAT_KEYS = ("near_misses_weighted", "cost_usd")


class CountsDelta:
    """Counts added to one scope since the last drain (sparse, JSON-friendly)."""

    __slots__ = ("g0", "buckets", "late", "watermark")
    STATE_VERSION = 1

    def __init__(self, g0: int = 60) -> None:
        self.g0 = int(g0)
        self.buckets: dict[int, tuple[list[int], list[float]]] = {}
        self.late = 0
        self.watermark: Optional[float] = None

    def __len__(self) -> int:
        return len(self.buckets)

    @property
    def empty(self) -> bool:
        """True when there is nothing to ship."""
        return not self.buckets and not self.late

    def add(self, bucket: int, ints: Iterable[int], floats: Iterable[float]) -> None:
        """Add a vector to fine bucket ``bucket``."""
        cur = self.buckets.get(bucket)
        if cur is None:
            self.buckets[bucket] = ([int(x) for x in ints], [float(x) for x in floats])
            return
        ci, cf = cur
        for k, x in enumerate(ints):
            ci[k] += int(x)
        for k, x in enumerate(floats):
            cf[k] += float(x)

    def merge(self, other: "CountsDelta") -> None:
        """Sum another delta into this one (same bucket width)."""
        if other.g0 != self.g0:
            raise ValueError("bucket widths differ")
        for b, (iv, fv) in other.buckets.items():
            self.add(b, iv, fv)
        self.late += other.late
        if other.watermark is not None and (self.watermark is None or other.watermark > self.watermark):
            self.watermark = other.watermark

    def totals(self) -> dict[str, float]:
        """Sum over all buckets, keyed like ``RollingCounts.window_counts``."""
        out = dict.fromkeys(_INT_KEYS + _FLOAT_KEYS, 0.0)
        for iv, fv in self.buckets.values():
            for k, x in zip(_INT_KEYS, iv):
                out[k] += x
            for k, x in zip(_FLOAT_KEYS, fv):
                out[k] += x
        return out

    def to_state(self) -> dict[str, Any]:
        """``{"v", "g0", "wm", "late", "b": [[bucket, [ints], [floats]], ...]}``, buckets sorted."""
        return {
            "v": self.STATE_VERSION,
            "g0": self.g0,
            "wm": self.watermark,
            "late": self.late,
            "b": [[b, list(iv), list(fv)] for b, (iv, fv) in sorted(self.buckets.items())],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "CountsDelta":
        if state.get("v") != cls.STATE_VERSION:
            raise ValueError(f"CountsDelta: unsupported state version {state.get('v')!r}")
        d = cls(g0=state["g0"])
        d.watermark = None if state["wm"] is None else float(state["wm"])
        d.late = int(state["late"])
        for b, iv, fv in state["b"]:
            d.buckets[int(b)] = ([int(x) for x in iv], [float(x) for x in fv])
        return d
