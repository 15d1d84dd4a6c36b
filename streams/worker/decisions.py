"""Decisions out: breaker changes to ``breaker-state`` / ``breaker-events``, escalations to Alertmanager.

The decision timer calls :meth:`Decisions.tick`: the monitor evaluates its scopes, every
change is published (the state record, one audit record per transition, an alert note),
drift reports and model changes go to ``breaker-events`` and decision lags to the latency histogram.

Every record a worker writes to ``breaker-state``, ``breaker-events`` and ``scope-partials`` goes
through a :class:`SignedTopic`, which adds the record HMAC of
:mod:`streams.contract.internal_auth` when a signing keyring is configured (readers ignore
records without it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from streams.contract.internal_auth import RecordAuth
from streams.engine.monitor import Change, Monitor
from streams.worker.alerting import AlertDispatcher
from streams.worker.metrics import Metrics

log = logging.getLogger("tripwire.worker")


class SignedTopic:
    """A faust topic whose every record carries the worker's record signature for ``purpose``.

    The only way workers write the internal topics: decisions, operator actions, audit records,
    policy reloads, outage re-publishing and cross-agent partials all ``send`` through one.
    """

    def __init__(self, topic: Any, auth: RecordAuth, purpose: str) -> None:
        self.topic = topic
        self.auth = auth
        self.purpose = purpose

    async def send(self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None,
                   headers: dict[str, bytes] | None = None) -> Any:
        signed = dict(headers or {})
        signed.update(self.auth.headers(self.purpose, key, value))
        return await self.topic.send(key=key, value=value, partition=partition, headers=signed or None)


class Decisions:
    """Publishes the monitor's decisions; :meth:`publish` is also what operator actions use."""

    def __init__(self, monitor: Monitor, metrics: Metrics, *, state_topic: Any, events_topic: Any,
                 alerts: AlertDispatcher | None) -> None:
        self.monitor = monitor
        self.metrics = metrics
        self.state_topic = state_topic
        self.events_topic = events_topic
        self.alerts = alerts

    async def alert_failed(self, scope: str, to_state: str, error: str) -> None:
        """An alert that could not be delivered: recorded on ``breaker-events``."""
        await self.events_topic.send(key=scope.encode(), value=orjson.dumps(
            {"type": "alert_failed", "scope": scope, "to": to_state, "error": error, "ts": time.time()}))

    async def publish(self, change: Change) -> None:
        """One breaker change: its state record, its transitions (audit) and their alerts."""
        st = change.state
        key = st.scope.encode()
        await self.state_topic.send(key=key, value=orjson.dumps(st.to_dict()))
        for t in change.transitions:
            await self.events_topic.send(key=key, value=orjson.dumps({"type": "transition", **t.to_dict()}))
            log.info("breaker %s: %s -> %s (%s) by %s", t.scope, t.from_state, t.to_state, t.reason[:200], t.actor)
            if self.alerts is not None:
                self.alerts.note(t)

    async def tick(self, started: float) -> None:
        """Evaluate at ``started`` (wall time) and publish what came out of it."""
        monitor = self.monitor
        for change in monitor.evaluate(started):
            await self.publish(change)
            if change.caused_at is not None:  # one sample per decision: its causing event → published
                monitor.decision_lags.append(max(0.0, time.time() - change.caused_at))
        while monitor.drift_reports:
            agent, report = monitor.drift_reports.popleft()
            await self.events_topic.send(key=f"agent:{agent}".encode(),
                                         value=orjson.dumps({"type": "drift", "agent": agent, **report.to_dict()}))
        while monitor.model_changes:  # {"type": "model_change", "agent", "from", "to", "ts", "before", "after"}
            rec = monitor.model_changes.popleft()
            await self.events_topic.send(key=f"agent:{rec['agent']}".encode(), value=orjson.dumps(rec))
        for lag in monitor.decision_lags:
            self.metrics.decision_latency.observe(lag)
        monitor.decision_lags.clear()
        if self.alerts is not None and self.alerts.pending:
            await self.alerts.flush()
