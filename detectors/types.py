"""Event protocol and small value types shared by all detectors.

The stream layer's pydantic model satisfies :class:`EventLike` structurally;
tests use a plain dataclass. Timestamps are epoch **seconds** (float).

>>> from dataclasses import dataclass
>>> rep = DriftReport("adwin", "near_miss_rate", 0.05, 0.10, 1_700_000_000.0)
>>> rep.to_dict()["signal"]
'near_miss_rate'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Protocol, runtime_checkable

__all__ = [
    "EventLike",
    "DriftReport",
    "KINDS",
    "TOOL_CALL",
    "LLM_CALL",
    "MONITOR_FLAG",
    "INCIDENT",
    "REFUSAL",
    "ESCALATION",
    "TASK_OUTCOME",
]

TOOL_CALL = "tool_call"
LLM_CALL = "llm_call"
MONITOR_FLAG = "monitor_flag"
INCIDENT = "incident"
REFUSAL = "refusal"
ESCALATION = "escalation"
TASK_OUTCOME = "task_outcome"
KINDS = (TOOL_CALL, LLM_CALL, MONITOR_FLAG, INCIDENT, REFUSAL, ESCALATION, TASK_OUTCOME)


@runtime_checkable
class EventLike(Protocol):
    """What detectors read from a trace event (schema v1, already validated).

    ``ts`` is the event time in epoch seconds. Optional fields are ``None``
    when absent.
    """

    kind: str
    ts: float
    agent_id: str
    tool: Optional[str]
    tenant: Optional[str]
    severity: Optional[str]
    status: Optional[str]
    latency_ms: Optional[float]
    cost_usd: Optional[float]
    input_tokens: Optional[float]
    output_tokens: Optional[float]
    human_minutes: Optional[float]
    outcome: Optional[str]
    task_id: Optional[str]
    attempt: Optional[int]
    intervened: Optional[bool]
    should_refuse: Optional[bool]


@dataclass(frozen=True, slots=True)
class DriftReport:
    """One detected change.

    ``before``/``after`` are the signal's level before and after the change
    (signal units, see :mod:`detectors.drift`); ``ts`` is the event time of
    the event that triggered detection. ``statistic`` is the detector's test
    statistic (``|after - before|`` for ADWIN, Jensen-Shannon divergence in
    bits for the tool mix) and ``detail`` an optional free-text hint (e.g.
    the tool whose share moved most). Use ``signal`` as a metric label,
    never ``detail`` (unbounded).
    """

    detector: str
    signal: str
    before: float
    after: float
    ts: float
    statistic: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        return asdict(self)
