"""Bounded, time-limited memory of recently seen ``event_id``s (idempotency).

Producers retry; Kafka redelivers after a rebalance. Within the horizon a
repeated ``event_id`` is dropped. Memory is capped: the oldest ids go first.

>>> seen = RecentIds(horizon_s=60, max_ids=2)
>>> [seen.seen_before(e, now=0.0) for e in ("a", "b", "a", "c", "a")]
[False, False, True, False, False]
"""

from __future__ import annotations

import itertools


class RecentIds:
    """Insertion-ordered id -> first-seen time, expired by age and by count."""

    __slots__ = ("horizon_s", "max_ids", "_ids")

    def __init__(self, horizon_s: float = 3600.0, max_ids: int = 200_000) -> None:
        self.horizon_s = horizon_s
        self.max_ids = max_ids
        self._ids: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def seen_before(self, event_id: str, now: float) -> bool:
        """Record ``event_id``; True if it was already seen inside the horizon."""
        ids = self._ids
        if event_id in ids:
            if now - ids[event_id] <= self.horizon_s:
                return True
            del ids[event_id]
        ids[event_id] = now
        if len(ids) > self.max_ids:
            del ids[next(iter(ids))]
        return False

    def expire(self, now: float) -> int:
        """Forget ids older than the horizon; returns how many went."""
        ids = self._ids
        cutoff = now - self.horizon_s
        gone = 0
        for event_id, seen_at in list(ids.items()):
            if seen_at >= cutoff:
                break
            del ids[event_id]
            gone += 1
        return gone

    def newest(self, n: int) -> list[list[object]]:
        """The ``n`` most recently inserted ``[id, seen_at]`` pairs, oldest first."""
        if n <= 0:
            return []
        out = [[k, v] for k, v in itertools.islice(reversed(self._ids.items()), n)]
        out.reverse()
        return out

    def to_state(self) -> list[list[object]]:
        return [[k, v] for k, v in self._ids.items()]

    def load_state(self, state: list[list[object]]) -> None:
        for k, v in state:
            self._ids[str(k)] = float(v)  # type: ignore[arg-type]
