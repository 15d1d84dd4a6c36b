"""Event-time "now" for window reads and breaker decisions.

Windows are over event time. ``now`` is the newest event time seen, advancing
with the wall clock while no newer events arrive, so an idle scope's windows
still roll forward and cool-downs still expire. With live traffic it tracks the
wall clock; with a fast replay of old traces it tracks the replayed time.

>>> t = [1000.0]
>>> clock = EventClock(wall=lambda: t[0])
>>> clock.observe(500.0); clock.now()
500.0
>>> t[0] = 1010.0; clock.now()
510.0
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: events claiming to be further ahead of the wall clock than this don't move "now"
MAX_AHEAD_S = 60.0


class EventClock:
    __slots__ = ("_wall", "newest", "_wall_at_newest")

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self.newest: float | None = None
        self._wall_at_newest = 0.0

    def observe(self, ts: float) -> None:
        newest = self.newest
        if newest is None or ts > newest:
            wall = self._wall()
            if ts > wall + MAX_AHEAD_S:
                ts = wall + MAX_AHEAD_S
            if newest is None or ts > newest:
                self.newest = ts
                self._wall_at_newest = wall

    def now(self) -> float:
        wall = self._wall()
        if self.newest is None:
            return wall
        return self.newest + max(0.0, wall - self._wall_at_newest)
