"""The engine's two clocks: the wall clock for decisions, each agent's own event time for its windows.

*Decisions* run on the **wall clock** (:meth:`EventClock.now`): breaker transitions and their
``since``/``updated_at``, cool-downs, probe deadlines, approval expiry, audit timestamps, token
expiry. No trace event moves it, so a producer cannot make cool-downs end or approvals expire early.
The backtest injects its simulated wall (the replayed event time), so a replay stays deterministic.

*Windows* are read at each **agent's own now** (:func:`agent_now`): the agent's newest event time,
advancing with the wall clock while the agent is idle. The engine keeps one number per agent for
it, the agent's *lag* (wall clock minus its newest event time when that event was counted,
:func:`observe`), and reads ``wall - lag``. So an agent whose partition lags 8 minutes reads its
5-minute window over its own last 5 minutes, not over 5 empty minutes of the wall clock; and a
cross-agent scope sums each agent's counts at that agent's own now, so a lagging partition blinds
nobody.

An event dated ahead of the wall clock is counted *at* the wall clock (:func:`clamp`; the pipeline
already dead-letters anything further ahead than ``max_future_skew_s`` as ``ts_future``): it never
moves an agent's watermark past the wall clock, so one forged future event cannot make the agent's
later real events late, nor push its windows past them.

>>> t = [1000.0]
>>> clock = EventClock(wall=lambda: t[0])
>>> clock.now()
1000.0
>>> clamp(1299.0, clock.now())       # a future event counts at the wall clock
1000.0
>>> newest, lag = observe(0.0, 0.0, 520.0, clock.now())   # a partition lagging 480 s
>>> newest, lag, agent_now(lag, clock.now())
(520.0, 480.0, 520.0)
>>> t[0] = 1010.0; agent_now(lag, clock.now())             # idle: advances with the wall clock
530.0
>>> observe(newest, lag, 400.0, clock.now())                # an older event changes nothing
(520.0, 480.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable


class EventClock:
    """The wall clock the engine decides on (injectable: the backtest's simulated wall)."""

    __slots__ = ("_wall",)

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall

    def now(self) -> float:
        """Wall-clock now: the time of decisions, audit records, cool-downs and expiries."""
        return self._wall()


def clamp(ts: float, wall: float) -> float:
    """The event time an event is counted at: its own, but never later than the wall clock."""
    return wall if ts > wall else ts


def observe(newest_ts: float, lag_s: float, ts: float, wall: float) -> tuple[float, float]:
    """(newest event time, lag) of an agent after counting an event at ``ts`` (already clamped)."""
    if ts > newest_ts:
        return ts, max(0.0, wall - ts)
    return newest_ts, lag_s


def agent_now(lag_s: float, wall: float) -> float:
    """An agent's event-time now: the wall clock less the agent's lag (never after the wall clock)."""
    return wall - lag_s
