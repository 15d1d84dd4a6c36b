"""Drill profiles: what traffic a drill injects and what the breaker must do about it.

>>> from streams.ops.drill_config import drill_scope
>>> events = PROFILES["near-miss-spike"].build(drill_scope(None, "ab12cd"), "ab12cd", 0.0)
>>> len(events), sorted({e["kind"] for e in events})
(56, ['monitor_flag', 'tool_call'])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.ops.drill_config import DrillScope


@dataclass(frozen=True)
class Profile:
    """What traffic a drill injects and what the breaker must do about it."""

    name: str
    description: str
    expect_state: str  # escalated | open | shadow
    enforces: bool  # authz must deny the drill tool
    pages: bool  # an alert must reach Alertmanager
    agent_scope: bool  # the watched scope is agent:<id> rather than agent:<id>/tool:<t>
    build: Callable[[DrillScope, str, float], list[dict[str, Any]]]


def _event(ds: DrillScope, drill_id: str, n: int, ts: float, kind: str, **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"schema_version": "1", "event_id": f"{drill_id}-{n}", "ts": int(ts * 1000),
                          "agent_id": ds.agent, "kind": kind, "drill_id": drill_id, **fields}
    if ds.tenant:
        ev["tenant"] = ds.tenant
    return ev


def _near_miss_spike(ds: DrillScope, drill_id: str, now: float) -> list[dict[str, Any]]:
    """40 calls, 16 high-severity flags: weighted rate 2.0/call = 20× the 0.10 objective (> 14.4×)."""
    out = []
    for i in range(40):
        call_id = f"{drill_id}-call-{i}"
        out.append(_event(ds, drill_id, len(out), now, "tool_call", tool=ds.tool, tool_call_id=call_id,
                          status="ok", latency_ms=120.0))
        if i % 5 in (1, 3):
            out.append(_event(ds, drill_id, len(out), now, "monitor_flag", tool=ds.tool, tool_call_id=call_id,
                              severity="high", monitor="tripwire-drill", action="blocked"))
    return out


def _incident_burst(ds: DrillScope, drill_id: str, now: float) -> list[dict[str, Any]]:
    """220 calls, 12 critical incidents: 5.5% of >= 200 calls in 1h (> 2%)."""
    out = []
    for i in range(220):
        call_id = f"{drill_id}-call-{i}"
        out.append(_event(ds, drill_id, len(out), now, "tool_call", tool=ds.tool, tool_call_id=call_id,
                          status="ok", latency_ms=80.0))
        if i % 18 == 17:
            out.append(_event(ds, drill_id, len(out), now, "incident", tool=ds.tool, tool_call_id=call_id,
                              severity="critical", monitor="tripwire-drill"))
    return out


def _drift(ds: DrillScope, drill_id: str, now: float) -> list[dict[str, Any]]:
    """Tool latency jumps 50× half-way (ADWIN drift) with one low flag as corroboration."""
    out = []
    n = 1200
    for i in range(n):
        base = 40.0 if i < n // 2 else 2000.0
        jitter = 1.0 + 0.2 * math.sin(i * 1.7)  # deterministic spread
        ts = now - (n - i) * 0.05
        out.append(_event(ds, drill_id, len(out), ts, "tool_call", tool=ds.tool, status="ok",
                          latency_ms=round(base * jitter, 3)))
    out.append(_event(ds, drill_id, len(out), now, "monitor_flag", tool=ds.tool, severity="low",
                      monitor="tripwire-drill", action="warned"))
    return out


PROFILES: dict[str, Profile] = {
    "near-miss-spike": Profile("near-miss-spike", "severity-weighted near-miss burn → escalated", "escalated",
                               True, True, False, _near_miss_spike),
    "incident-burst": Profile("incident-burst", "critical incidents > 2% of >= 200 calls in 1h → open", "open",
                              True, True, False, _incident_burst),
    "drift": Profile("drift", "tool-latency drift + a flag → shadow (reported, never enforced)", "shadow",
                     False, False, True, _drift),
}
