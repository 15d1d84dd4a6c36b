"""Rebuild incidents from the ``breaker-events`` audit topic (for ``tripwire incidents``).

Reads every partition of the topic from the beginning up to the end offsets seen at start
(a snapshot, so the command terminates on a live topic), keeps the records with
``type == "transition"`` in timestamp order, and feeds them to
:class:`breakers.incidents.IncidentTracker`. Other record types (``policy_reload``,
``alert_failed``) and unreadable records are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from breakers.incidents import Incident, IncidentTracker
from breakers.state_machine import Transition
from streams.kafka.security import KafkaSecurity
from streams.kafka.topic_read import TopicReadError, read_records


class IncidentsReadError(RuntimeError):
    """The broker or the topic could not be read."""


@dataclass
class IncidentLog:
    """Incidents in opening order, plus what was skipped while reading."""

    incidents: list[Incident] = field(default_factory=list)
    records: int = 0
    transitions: int = 0
    skipped: int = 0

    def find(self, ident: str) -> Incident | None:
        """The incident with id ``ident`` (a unique prefix of at least 6 characters also matches)."""
        exact = [i for i in self.incidents if i.id == ident]
        if exact:
            return exact[0]
        if len(ident) >= 6:
            hits = [i for i in self.incidents if i.id.startswith(ident) or i.id.removeprefix("inc-").startswith(ident)]
            if len(hits) == 1:
                return hits[0]
        return None


def build_incidents(records: Iterable[bytes | None]) -> IncidentLog:
    """Incidents from raw ``breaker-events`` values (any order; sorted by transition time)."""
    out = IncidentLog()
    transitions: list[Transition] = []
    for value in records:
        out.records += 1
        try:
            doc = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or doc.get("type") != "transition":
            out.skipped += 1
            continue
        try:
            transitions.append(Transition.from_dict({k: v for k, v in doc.items() if k != "type"}))
        except (KeyError, TypeError, ValueError):
            out.skipped += 1
    transitions.sort(key=lambda t: float(t.ts))
    tracker = IncidentTracker()
    seen: dict[str, Incident] = {}
    for t in transitions:
        inc = tracker.apply(t)
        if inc is not None and inc.id not in seen:
            seen[inc.id] = inc
            out.incidents.append(inc)
    out.transitions = len(transitions)
    return out


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0,
               security: KafkaSecurity | None = None) -> list[bytes | None]:
    """Every record value of ``topic`` from the beginning to the end offsets at call time."""
    try:
        return [r.value for r in read_records(bootstrap, topic, timeout_s=timeout_s, security=security)]
    except TopicReadError as exc:
        raise IncidentsReadError(str(exc)) from None


def load_incidents(bootstrap: str, topic: str, timeout_s: float = 10.0,
                   security: KafkaSecurity | None = None) -> IncidentLog:
    """Read ``topic`` and rebuild its incidents."""
    return build_incidents(read_topic(bootstrap, topic, timeout_s, security))


def summary_row(inc: Incident) -> dict[str, Any]:
    """The fields ``tripwire incidents list`` shows."""
    return {"id": inc.id, "scope": inc.scope, "opened_at": inc.opened_at, "state": inc.state,
            "now": (inc.timeline[-1]["to"] if inc.timeline else inc.trigger.get("to")),
            "trigger": f"{inc.trigger.get('from')} -> {inc.trigger.get('to')}: {inc.trigger.get('reason', '')}",
            "actor": inc.trigger.get("actor"), "drill": inc.drill}


__all__ = ["IncidentLog", "IncidentsReadError", "build_incidents", "load_incidents", "read_topic", "summary_row"]
