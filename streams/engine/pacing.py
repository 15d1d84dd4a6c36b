"""Evaluation pacing: which changed scopes one evaluation tick runs, and which wait.

Scopes with new events since their last evaluation are *pending*: ``urgent`` ones saw a flag,
incident, error, cost or drift and are evaluated on the next tick; the others saw only good
events, which cannot raise a rate, and are evaluated every ``relaxed_eval_s`` (not skipped:
good calls can complete a minimum-evidence rule). A scope is evaluated at most once per
``hot_eval_s``, and one tick spends at most ``eval_budget_s`` of CPU: the rest wait for the
next tick, least recently evaluated first, so decisions slow down under a flood instead of
the whole worker.

>>> pacer = EvaluationPacer(EngineTuning())
>>> pacer.pending(urgent=True).add("agent:a")
>>> list(pacer.due(wall=100.0, enforcing=()))
['agent:a']
>>> pacer.evaluated("agent:a", 100.0); pacer.pending(urgent=True).add("agent:a")
>>> list(pacer.due(wall=100.5, enforcing=())), "agent:a" in pacer.urgent   # hot: deferred, not dropped
([], True)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from streams.engine.tuning import EngineTuning

_NEVER = -1e18


class EvaluationPacer:
    """Pending scopes and when each was last evaluated."""

    def __init__(self, tuning: EngineTuning) -> None:
        self.tuning = tuning
        #: scopes with only good events since their last evaluation
        self.dirty: set[str] = set()
        #: scopes with a bad event (or another reason to look now) since their last evaluation
        self.urgent: set[str] = set()
        #: wall time of each scope's last evaluation
        self.evaluated_at: dict[str, float] = {}
        #: evaluations put off to a later tick because a tick's CPU budget ran out
        self.deferred = 0
        self._last_relaxed = 0.0

    def pending(self, urgent: bool) -> set[str]:
        """The set a changed scope goes into (the ingest hot path adds to it directly)."""
        return self.urgent if urgent else self.dirty

    def wake(self, scopes: Iterable[str]) -> None:
        """Evaluate these scopes on the next tick (policy reload, partials caught up, …)."""
        self.urgent.update(scopes)

    def due(self, wall: float, enforcing: Iterable[str]) -> Iterator[str]:
        """The scopes to evaluate now, in order; ``enforcing`` ones are always candidates.

        A scope evaluated less than ``hot_eval_s`` ago, or left over when the tick's CPU
        budget is spent, goes back to :attr:`urgent`. Call :meth:`evaluated` for each scope
        actually evaluated.
        """
        tuning = self.tuning
        candidates = self.urgent
        self.urgent = set()
        if wall - self._last_relaxed >= tuning.relaxed_eval_s:
            self._last_relaxed = wall
            candidates |= self.dirty
            self.dirty = set()
        candidates.update(enforcing)
        evaluated_at = self.evaluated_at
        hot_s = tuning.hot_eval_s
        order: Iterable[str] = candidates
        if len(candidates) > tuning.sort_above:  # overload: least recently evaluated first, no starvation
            order = sorted(candidates, key=lambda sc: evaluated_at.get(sc, _NEVER))
        deadline = time.perf_counter() + tuning.eval_budget_s
        for scope in order:
            if wall - evaluated_at.get(scope, _NEVER) < hot_s:
                self.urgent.add(scope)  # evaluated moments ago: at most once per hot_eval_s
                continue
            if time.perf_counter() > deadline:
                self.urgent.add(scope)  # out of this tick's budget: next tick, oldest first
                self.deferred += 1
                continue
            yield scope

    def evaluated(self, scope: str, wall: float) -> None:
        self.evaluated_at[scope] = wall

    def forget(self, scopes: Iterable[str]) -> None:
        """Drop the bookkeeping of scopes whose agent is gone."""
        for scope in scopes:
            self.evaluated_at.pop(scope, None)
