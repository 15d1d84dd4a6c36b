"""When each breaker that is not closed must be evaluated again, absent new events.

The old rule evaluated every breaker not closed on every tick, so a fleet whose agents sit in
``shadow`` (a slow burn) cost an evaluation per scope per tick. A verdict is a pure function of the
scope's window counts (plus drift activity and reset baselines) and :func:`breakers.state_machine.step`
changes a settled state only when a timer runs out, so between those instants evaluating again
decides nothing new. After each evaluation the engine schedules the scope at the earliest of:

* its state's timer (:func:`breakers.state_machine.next_deadline`: cool-down, ``clear_after``, approval expiry);
* the first instant one of its budgets' windows changes without new events
  (:meth:`detectors.counts.RollingCounts.window_expiry`, at the agent's own event-time lag);
* its drift signal going quiet, and an operator reset's baseline leaving a window.

New events, probe results, operator actions and state records from other workers wake a scope at
once (:class:`streams.engine.pacing.EvaluationPacer`); half-open and cross-agent scopes are
re-evaluated every tick. ``EngineTuning.evaluate_unchanged`` restores the old rule (same decisions,
more evaluations): the backtest equivalence test runs both.

>>> r = Rechecks()
>>> r.schedule("agent:a", 130.0); r.schedule("agent:b", 100.0); r.schedule("agent:a", 120.0)
>>> r.due(110.0), r.due(125.0), r.due(200.0)
(['agent:b'], ['agent:a'], [])
"""

from __future__ import annotations

import heapq
import math


class Rechecks:
    """Scope → when to evaluate it again (a min-heap with lazy deletion; ``inf`` is never queued)."""

    __slots__ = ("at", "_heap")

    def __init__(self) -> None:
        #: scope → the instant it is due (the heap may also hold outdated entries for it)
        self.at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self.at)

    def schedule(self, scope: str, at: float) -> None:
        """Evaluate ``scope`` again at ``at`` (replaces an earlier schedule)."""
        self.at[scope] = at
        if at < math.inf:
            heap = self._heap
            heapq.heappush(heap, (at, scope))
            if len(heap) > 4 * len(self.at) + 1024:  # outdated entries pile up: rebuild
                self._heap = [(t, s) for s, t in self.at.items() if t < math.inf]
                heapq.heapify(self._heap)

    def cancel(self, scope: str) -> None:
        """Forget ``scope`` (closed, or woken by other means)."""
        self.at.pop(scope, None)

    def due(self, now: float) -> list[str]:
        """The scopes due at ``now`` (each leaves the schedule; the caller reschedules after evaluating)."""
        out: list[str] = []
        heap, at = self._heap, self.at
        while heap and heap[0][0] <= now:
            t, scope = heapq.heappop(heap)
            if at.get(scope) == t:
                del at[scope]
                out.append(scope)
        return out


__all__ = ["Rechecks"]
