"""The window counters: their names (the one copy in the code base) and what each event counts as.

Every scope's rolling windows keep these counters; budgets (``breakers.evaluate``), the
evidence reader protocol, partial counts between workers and the CLI all read them by
these names. Storage order splits them into integer and float counters.

>>> from detectors.testing import Ev
>>> KEYS[:3], len(KEYS)
(('tool_calls', 'near_misses', 'near_misses_weighted'), 11)
>>> event_vector(Ev("incident", 0.0, severity="critical"))
([0, 0, 1, 1, 0, 0, 0, 0, 1], [0.0, 0.0])
"""

from __future__ import annotations

from typing import Any

from detectors.config import DEFAULT_COUNTS_CONFIG, CountsConfig

__all__ = [
    "TOOL_CALLS", "NEAR_MISSES", "NEAR_MISSES_WEIGHTED", "INCIDENTS", "INCIDENTS_CRITICAL", "ERRORS",
    "REFUSALS", "ESCALATIONS", "LLM_CALLS", "COST_USD", "EVENTS",
    "KEYS", "INT_KEYS", "FLOAT_KEYS", "event_vector",
]

TOOL_CALLS = "tool_calls"  #: ``tool_call`` events
NEAR_MISSES = "near_misses"  #: ``monitor_flag`` events
NEAR_MISSES_WEIGHTED = "near_misses_weighted"  #: flags weighted by severity (``CountsConfig``)
INCIDENTS = "incidents"  #: ``incident`` events
INCIDENTS_CRITICAL = "incidents_critical"  #: incidents of severity ``critical``
ERRORS = "errors"  #: ``tool_call`` events with ``status == "error"``
REFUSALS = "refusals"  #: ``refusal`` events
ESCALATIONS = "escalations"  #: ``escalation`` events
LLM_CALLS = "llm_calls"  #: ``llm_call`` events
COST_USD = "cost_usd"  #: ``cost_usd`` of every kind but ``task_outcome`` (a task total)
EVENTS = "events"  #: every event

#: Integer counters, in storage order.
INT_KEYS = (TOOL_CALLS, NEAR_MISSES, INCIDENTS, INCIDENTS_CRITICAL, ERRORS, REFUSALS, ESCALATIONS, LLM_CALLS, EVENTS)
#: Float counters, in storage order.
FLOAT_KEYS = (NEAR_MISSES_WEIGHTED, COST_USD)
#: Keys of every window's counts, in this order.
KEYS = (TOOL_CALLS, NEAR_MISSES, NEAR_MISSES_WEIGHTED, INCIDENTS, INCIDENTS_CRITICAL, ERRORS, REFUSALS,
        ESCALATIONS, LLM_CALLS, COST_USD, EVENTS)


def event_vector(ev: Any, cfg: CountsConfig = DEFAULT_COUNTS_CONFIG) -> tuple[list[int], list[float]]:
    """Classify one event into ``(int counters, float counters)`` (storage order).

    ``cost_usd`` counts on every kind except ``task_outcome`` (whose cost is a
    task total that duplicates the per-call costs). ``errors`` counts
    ``tool_call`` events with ``status == "error"``.
    """
    iv = [0] * len(INT_KEYS)
    fv = [0.0] * len(FLOAT_KEYS)
    iv[8] = 1
    kind = ev.kind
    if kind == "tool_call":
        iv[0] = 1
        if ev.status == "error":
            iv[4] = 1
    elif kind == "llm_call":
        iv[7] = 1
    elif kind == "monitor_flag":
        iv[1] = 1
        fv[0] = cfg.severity_weights.get(ev.severity, float(cfg.default_weight))
    elif kind == "incident":
        iv[2] = 1
        if ev.severity == "critical":
            iv[3] = 1
    elif kind == "refusal":
        iv[5] = 1
    elif kind == "escalation":
        iv[6] = 1
    if kind != "task_outcome":
        c = ev.cost_usd
        if c:
            fv[1] = float(c)
    return iv, fv
