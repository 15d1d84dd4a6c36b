"""Test/bench helpers: a minimal :class:`~detectors.types.EventLike` dataclass.

>>> Ev("tool_call", 1.0, tool="search").tool
'search'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

__all__ = ["Ev", "ev_from_json"]


@dataclass(slots=True)
class Ev:
    """Plain event satisfying ``EventLike`` (``ts`` in epoch seconds)."""

    kind: str
    ts: float
    agent_id: str = "a"
    tool: Optional[str] = None
    tenant: Optional[str] = None
    severity: Optional[str] = None
    status: Optional[str] = None
    latency_ms: Optional[float] = None
    cost_usd: Optional[float] = None
    input_tokens: Optional[float] = None
    output_tokens: Optional[float] = None
    human_minutes: Optional[float] = None
    outcome: Optional[str] = None
    task_id: Optional[str] = None
    attempt: Optional[int] = None
    attempt_kind: Optional[str] = None
    intervened: Optional[bool] = None
    should_refuse: Optional[bool] = None


_FIELDS = tuple(Ev.__dataclass_fields__)


def ev_from_json(obj: Mapping[str, Any]) -> Ev:
    """Build an :class:`Ev` from a schema-v1 JSON object (``ts`` in epoch ms int or seconds float).

    RFC 3339 strings are not handled here (the stream layer parses them).
    """
    kw = {k: obj[k] for k in _FIELDS if k in obj}
    ts = obj["ts"]
    kw["ts"] = ts / 1000.0 if isinstance(ts, int) else float(ts)
    return Ev(**kw)
