"""Incident records assembled from breaker transitions (for the audit trail and post-mortems).

An incident opens when a scope leaves the allowed states (closed/shadow) for open, escalated or
forced_open, collects every later transition and operator action of that scope, and is
resolved when the scope is closed again (or moves back to shadow).

>>> from breakers.state_machine import Transition
>>> t = Transition("agent:a", "closed", "open", "trip", "burn 20x", {"burn_rates": {"1h": 20}}, "v1", "tripwire", 100.0)
>>> tr = IncidentTracker(); inc = tr.apply(t)
>>> inc.state, tr.apply(Transition("agent:a", "open", "closed", "reset", "fixed", {}, "v1", "ann", 200.0)).resolution["by"]
('open', 'ann')
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .state_machine import ALLOWING, TRIPWIRE, Transition


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Incident:
    id: str
    scope: str
    opened_at: float
    trigger: dict[str, Any]
    evidence: dict[str, Any]
    timeline: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    resolution: dict[str, Any] | None = None
    drill: bool = False

    @property
    def state(self) -> str:
        """'resolved' or 'open'."""
        return "resolved" if self.resolution else "open"

    @classmethod
    def open(cls, t: Transition) -> "Incident":
        ident = hashlib.sha256(f"{t.scope}\0{t.ts}".encode()).hexdigest()[:12]
        inc = cls(f"inc-{ident}", t.scope, t.ts, t.to_dict(), dict(t.evidence), drill=t.drill)
        inc.record(t)
        return inc

    def record(self, t: Transition) -> None:
        """Append ``t`` to the timeline (and to actions if an operator did it); resolve on close."""
        d = t.to_dict()
        self.timeline.append(d)
        if t.actor != TRIPWIRE:
            self.actions.append({"ts": t.ts, "actor": t.actor, "action": t.action, "reason": t.reason})
        if t.to_state in ALLOWING and t.from_state not in ALLOWING:
            self.resolution = {"resolved_at": t.ts, "by": t.actor, "how": t.action, "reason": t.reason,
                               "duration_s": t.ts - self.opened_at}

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "scope": self.scope, "opened_at": self.opened_at, "trigger": self.trigger,
                "evidence": self.evidence, "timeline": list(self.timeline), "actions": list(self.actions),
                "resolution": self.resolution, "drill": self.drill, "state": self.state}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Incident":
        return cls(d["id"], d["scope"], float(d["opened_at"]), dict(d["trigger"]), dict(d.get("evidence") or {}),
                   list(d.get("timeline") or []), list(d.get("actions") or []), d.get("resolution"),
                   bool(d.get("drill", False)))

    def to_markdown(self) -> str:
        """A post-mortem skeleton: summary, trigger, evidence, timeline, actions, resolution."""
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = [
            f"# Incident {self.id}{' (drill)' if self.drill else ''}",
            "",
            f"- **Scope:** `{esc(self.scope)}`",
            f"- **Opened:** {_iso(self.opened_at)}",
            f"- **Status:** {self.state}",
            f"- **Trigger:** {esc(self.trigger.get('from'))} → {esc(self.trigger.get('to'))}: "
            f"{esc(self.trigger.get('reason'))}",
            "",
            "## Evidence",
            "",
            "```json",
            json.dumps(self.evidence, indent=2, sort_keys=True, default=str),
            "```",
            "",
            "## Timeline",
            "",
            "| time (UTC) | from | to | action | actor | reason |",
            "|---|---|---|---|---|---|",
        ]
        for t in self.timeline:
            lines.append(f"| {_iso(t['ts'])} | {esc(t['from'])} | {esc(t['to'])} | {esc(t['action'])} | "
                         f"{esc(t['actor'])} | {esc(t['reason'])} |")
        lines += ["", "## Operator actions", ""]
        lines += [f"- {_iso(a['ts'])} {esc(a['actor'])}: {esc(a['action'])} — {esc(a['reason'])}"
                  for a in self.actions] or ["- none"]
        lines += ["", "## Resolution", ""]
        if self.resolution:
            r = self.resolution
            lines.append(f"Resolved {_iso(r['resolved_at'])} by {esc(r['by'])} ({esc(r['how'])}) after "
                         f"{r['duration_s']:.0f}s: {esc(r['reason'])}")
        else:
            lines.append("Unresolved.")
        return "\n".join(lines) + "\n"


class IncidentTracker:
    """Open incidents per scope, fed with every Transition in order."""

    def __init__(self) -> None:
        self.open: dict[str, Incident] = {}

    def apply(self, t: Transition) -> Incident | None:
        """Record ``t``; returns the incident it belongs to (resolved ones are dropped from ``open``)."""
        inc = self.open.get(t.scope)
        if inc is None:
            if t.from_state in ALLOWING and t.to_state not in ALLOWING:
                inc = self.open[t.scope] = Incident.open(t)
                return inc
            return None
        inc.record(t)
        if inc.resolution:
            del self.open[t.scope]
        return inc
