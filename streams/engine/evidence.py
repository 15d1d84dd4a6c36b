"""The evidence a policy evaluation reads: window counts at one instant, minus operator resets.

:class:`EvidenceAt` is the :class:`breakers.evidence.EvidenceReader` the engine hands to
:func:`breakers.evaluate.evaluate`; it reads each (scope, window) once per evaluation tick.
:class:`ResetBaselines` remembers, per scope, the counts at an operator's reset: evidence
from before a reset no longer counts against the scope. Resets and reads are on the wall clock;
each agent's counts are read at the agent's own event-time now (:mod:`streams.engine.clock`).

>>> baselines = ResetBaselines()
>>> baselines.note("agent:a", 100.0, {300: {"incidents": 4.0}}, now=100.0, longest=300)
>>> baselines.subtract("agent:a", 300, 200.0, {"incidents": 5.0, "tool_calls": 9.0})
{'incidents': 1.0, 'tool_calls': 9.0}
>>> baselines.subtract("agent:a", 300, 500.0, {"incidents": 5.0})  # the window rolled past the reset
{'incidents': 5.0}
"""

from __future__ import annotations

from collections.abc import Callable

from streams.engine.agent_state import AgentState
from streams.engine.clock import agent_now

Counts = dict[str, float]


class ResetBaselines:
    """Per scope: (reset time, {window_s: counts at the reset})."""

    __slots__ = ("by_scope",)

    def __init__(self) -> None:
        self.by_scope: dict[str, tuple[float, dict[int, Counts]]] = {}

    def note(self, scope: str, at: float, counts: dict[int, Counts], now: float, longest: int) -> None:
        """Remember the counts of ``scope`` at a reset at ``at``; forget baselines none of their windows reaches.

        Each baseline is kept while one of its own windows still reaches back before its reset (it used to
        be dropped after max(the new reset's longest window, 3 d): a 7-day budget's pre-reset evidence came
        back into its window at someone else's reset).
        """
        self.by_scope[scope] = (at, counts)
        for other, (t, windows) in list(self.by_scope.items()):
            if now - t >= max(windows, default=longest):
                del self.by_scope[other]

    def subtract(self, scope: str, window_s: int, now: float, counts: Counts) -> Counts:
        """``counts`` of a window, less what was there at the reset while the window reaches back before it.

        Approximation: as pre-reset buckets age out of a window, the subtraction can exceed
        what is left of them (clamped at 0), so the window briefly under-counts; it is exact
        again once the window no longer reaches back before the reset.
        """
        base = self.by_scope.get(scope)
        if base is None or now - base[0] >= window_s or window_s not in base[1]:
            return counts
        before = base[1][window_s]
        return {k: max(0.0, v - before.get(k, 0.0)) for k, v in counts.items()}


class EvidenceAt:
    """breakers.EvidenceReader over the engine's counts at one wall-clock instant (cached per scope and window).

    ``counts(scope, window_s, wall)`` reads each agent at its own now; a drift report stays active for
    ``drift_active_s`` of the agent's own event time.
    """

    __slots__ = ("_counts", "_agent_state", "_baselines", "_drift_active_s", "wall", "_cache", "_observed")

    def __init__(self, counts: Callable[[str, int, float], Counts], agent_state: Callable[[str], AgentState | None],
                 baselines: ResetBaselines, drift_active_s: float, wall: float,
                 observed: Callable[[str, int, float], float | None] | None = None) -> None:
        self._observed = observed
        self._counts = counts
        self._agent_state = agent_state
        self._baselines = baselines
        self._drift_active_s = drift_active_s
        self.wall = wall
        self._cache: dict[tuple[str, int], Counts] = {}

    def window_counts(self, scope: str, window_s: int) -> Counts:
        key = (scope, window_s)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._baselines.subtract(scope, window_s, self.wall, self._counts(scope, window_s, self.wall))
            self._cache[key] = hit
        return hit

    def observed_s(self, scope: str, window_s: int) -> float | None:
        """Seconds of the window the scope's counts cover (oldest counted bucket to now; None: unknown)."""
        if self._observed is None:
            return None
        key = (scope, -window_s)  # cached next to the window counts (negative: never a window key)
        if key not in self._cache:
            self._cache[key] = self._observed(scope, window_s, self.wall)  # type: ignore[assignment]
        return self._cache[key]  # type: ignore[return-value]

    def drift_active(self, scope: str) -> bool:
        st = self._agent_state(scope)
        return bool(st and st.last_drift_ts
                    and agent_now(st.lag_s, self.wall) - st.last_drift_ts <= self._drift_active_s)
