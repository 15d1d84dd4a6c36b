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

    @classmethod
    def of(cls, v: Verdict) -> VerdictSummary:
        return cls(v.budget, v.burn_rates, v.budget_remaining, v.fired)


@dataclass
class Change:
    """A breaker state to publish, with the transitions that led to it."""

    state: BreakerState
    transitions: list[Transition]
    verdicts: list[Verdict] = field(default_factory=list)
