"""What breakers read from detectors: a small Protocol, plus a dict-backed reader for tests.

breakers depends on this Protocol only (not on detectors' classes; the counter names come from
:mod:`detectors.keys`), so any object with these two methods works: detectors' rolling windows in
the worker, or :class:`StaticEvidence`.
"""
from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

from detectors.keys import KEYS


@runtime_checkable
class EvidenceReader(Protocol):
    """Rolling per-scope counters.

    ``window_counts(scope, window_s)`` returns sums over the last ``window_s`` seconds with
    the keys of ``detectors.keys.KEYS`` (missing keys read as 0). ``near_misses_weighted`` is the
    severity-weighted flag count (weights are detectors' choice; the default policy is tuned for
    detectors' defaults low 1, medium 2, high 5, critical 10). ``drift_active(scope)`` is True while a drift detector
    has an unresolved alarm for the scope.
    """

    def window_counts(self, scope: str, window_s: int) -> Mapping[str, float]: ...

    def drift_active(self, scope: str) -> bool: ...


class StaticEvidence:
    """EvidenceReader over plain dicts: ``{scope: {window_s: {key: value}}}``.

    >>> ev = StaticEvidence({"agent:a": {3600: {"tool_calls": 10}}})
    >>> ev.window_counts("agent:a", 3600)["tool_calls"], ev.window_counts("agent:a", 300)["tool_calls"]
    (10, 0)
    """

    def __init__(self, counts: Mapping[str, Mapping[int, Mapping[str, float]]] | None = None,
                 drift: set[str] | frozenset[str] = frozenset()):
        self.counts = {s: {int(w): dict(c) for w, c in ws.items()} for s, ws in (counts or {}).items()}
        self.drift = set(drift)

    def window_counts(self, scope: str, window_s: int) -> Mapping[str, float]:
        found = self.counts.get(scope, {}).get(int(window_s), {})
        return {k: found.get(k, 0) for k in KEYS}

    def drift_active(self, scope: str) -> bool:
        return scope in self.drift

    def set(self, scope: str, window_s: int, **counts: float) -> "StaticEvidence":
        """Set the counts of one window (chainable)."""
        self.counts.setdefault(scope, {})[int(window_s)] = dict(counts)
        return self

    def set_all(self, scope: str, windows: list[int] | tuple[int, ...], **counts: float) -> "StaticEvidence":
        """Set the same counts for several windows (a burst entirely inside the shortest)."""
        for w in windows:
            self.set(scope, w, **counts)
        return self
