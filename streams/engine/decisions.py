"""What an evaluation produces: breaker states to publish, and the slim figures ``/metrics`` keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from breakers.evaluate import Verdict
from breakers.state_machine import BreakerState, Transition


class VerdictSummary(NamedTuple):
    """What /metrics needs of a verdict (the full verdict with its evidence is recomputed on demand)."""

    budget: str
    burn_rates: dict[str, float]
    budget_remaining: float | None
    fired: bool
    #: rule long window label → minimum evidence holds there (``tripwire_budget_evidence_sufficient``)
    evidence_sufficient: dict[str, bool] = {}

    @classmethod
    def of(cls, v: Verdict) -> VerdictSummary:
        return cls(v.budget, v.burn_rates, v.budget_remaining, v.fired, v.evidence_sufficient)


#: transitions an evaluation makes because of evidence (a budget fired, or stopped firing after probes): the
#: decisions ``tripwire_decision_latency_seconds`` times. Timer-driven ones (``half_open`` after the cool-down,
#: ``clear`` after quiet time) and operator actions are caused by no event and are not timed.
EVIDENCE_ACTIONS = frozenset({"trip", "escalate", "shadow", "reopen", "close"})


def caused_at(transitions: list[Transition], newest_event_ts: float | None) -> float | None:
    """Event time of what caused a decision, or None when no transition was caused by evidence.

    One value per decision, never per re-evaluation: an evaluation that changes nothing has no transitions.

    >>> t = Transition("agent:a", "closed", "open", "trip", "", {}, "v", "tripwire", 100.0)
    >>> caused_at([t], 98.5), caused_at([], 98.5), caused_at([t], None)
    (98.5, None, None)
    >>> caused_at([Transition("agent:a", "open", "half_open", "half_open", "", {}, "v", "tripwire", 100.0)], 98.5)
    """
    if newest_event_ts is None or not newest_event_ts:
        return None
    return newest_event_ts if any(t.action in EVIDENCE_ACTIONS for t in transitions) else None


@dataclass
class Change:
    """A breaker state to publish, with the transitions that led to it.

    ``caused_at``: event time of the newest event of the scope's agent when an evidence-driven transition was
    decided (:func:`caused_at`); the transport observes ``published − caused_at`` once, after publishing.
    """

    state: BreakerState
    transitions: list[Transition]
    verdicts: list[Verdict] = field(default_factory=list)
    caused_at: float | None = None
