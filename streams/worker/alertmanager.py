"""Alertmanager API v2 client of the worker: fire / resolve / re-post breaker alerts (httpx, asyncio).

``POST {base}/api/v2/alerts`` takes a JSON list of alerts. A firing alert carries
``endsAt = now + 4 × repost_interval`` (as Prometheus does) and is re-posted by
:meth:`AsyncAlertmanager.repost_due` every ``repost_interval`` until resolved, so Alertmanager
keeps it active while tripwire runs and lets it lapse if tripwire dies (catch that with a
separate "tripwire down" rule). Resolving posts the same labels with ``endsAt = now``.

Transient failures (transport errors, 429, 5xx) are retried with exponential back-off and full
jitter; other 4xx raise :class:`AlertmanagerError` at once. An alert that could not be posted
stays in the registry and goes out again with the next ``repost_due``. Which transitions page
and resolve is :mod:`streams.worker.alerting`'s job.

>>> alert_labels(ALERT_OPEN, "agent:a/tool:shell")["tool"], alert_for_transition("forced_open")
('shell', 'TripwireBreakerOpen')
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from breakers.scope import ScopeError, parse_scope
from breakers.state_machine import ESCALATED, FORCED_OPEN, OPEN
from streams.settings import DEFAULT_RUNBOOK_BASE_URL

ALERT_ESCALATED = "TripwireBreakerEscalated"
ALERT_OPEN = "TripwireBreakerOpen"
DEFAULT_RUNBOOK = DEFAULT_RUNBOOK_BASE_URL  # + '#<alertname lower>'; the worker passes settings.runbook_base_url
MAX_ANNOTATION = 4000


class AlertmanagerError(RuntimeError):
    """Alertmanager rejected the alerts or stayed unreachable after all retries."""


def rfc3339(ts: float) -> str:
    """Epoch seconds → RFC 3339 UTC with milliseconds.

    >>> rfc3339(0)
    '1970-01-01T00:00:00.000Z'
    """
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def alert_for_transition(to_state: str) -> str | None:
    """Which alert a breaker state raises: escalated → Escalated, open/forced_open → Open."""
    if to_state == ESCALATED:
        return ALERT_ESCALATED
    if to_state in (OPEN, FORCED_OPEN):
        return ALERT_OPEN
    return None


def alert_labels(alertname: str, scope: str, *, budget: str | None = None, severity: str = "page",
                 drill: bool = False) -> dict[str, str]:
    """Labels of a breaker alert; agent/tool/tenant come from the scope (omitted when absent,
    since Alertmanager treats an empty label as absent)."""
    labels = {"alertname": alertname, "scope": scope, "severity": severity, "drill": "true" if drill else "false"}
    try:
        s = parse_scope(scope)
    except ScopeError:
        s = None
    if s is not None:
        for k in ("agent", "tool", "tenant"):
            v = getattr(s, k)
            if v is not None:
                labels[k] = v
    if budget:
        labels["budget"] = budget
    return labels


@dataclass(slots=True)
class ActiveAlert:
    """An alert the worker keeps firing (re-posted until resolved)."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    last_posted: float | None = None
    generator_url: str = ""

    def payload(self, now: float, repost_interval: float, resolved: bool = False) -> dict[str, Any]:
        ends = now if resolved else now + 4 * repost_interval
        d: dict[str, Any] = {"labels": self.labels, "annotations": self.annotations,
                             "startsAt": rfc3339(self.starts_at), "endsAt": rfc3339(max(ends, self.starts_at))}
        if self.generator_url:
            d["generatorURL"] = self.generator_url
        return d


class AsyncAlertmanager:
    """Async client. ``async with AsyncAlertmanager(url) as am: await am.fire(...)``."""

    def __init__(self, base_url: str, *, client: httpx.AsyncClient | None = None, timeout: float = 5.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 generator_url: str = "http://127.0.0.1:6066/v1/breakers", runbook_url: str = DEFAULT_RUNBOOK,
                 repost_interval: float = 60.0, retries: int = 4, backoff_base: float = 0.2,
                 backoff_max: float = 5.0, rng: Callable[[], float] = random.random) -> None:
        self.base_url = base_url
        self.generator_url = generator_url
        self.runbook_url = runbook_url
        self.repost_interval = repost_interval
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rng = rng
        #: firing alerts by (alertname, scope)
        self.active: dict[tuple[str, str], ActiveAlert] = {}
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._own = client is None
        self._sleep = sleep

    async def __aenter__(self) -> AsyncAlertmanager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()

    # ------------------------------------------------------------------ payloads and registry

    def _delay(self, attempt: int) -> float:
        """Full-jitter exponential back-off for retry ``attempt`` (0-based)."""
        return self.rng() * min(self.backoff_max, self.backoff_base * (2 ** attempt))

    def _url(self) -> str:
        return self.base_url.rstrip("/") + "/api/v2/alerts"

    def _generator(self, scope: str) -> str:
        return f"{self.generator_url.rstrip('/')}/{quote(scope, safe='')}"

    def _build(self, scope: str, *, alertname: str, summary: str, evidence: Mapping[str, Any] | None,
               budget: str | None, severity: str, drill: bool, now: float) -> ActiveAlert:
        key = (alertname, scope)
        labels = alert_labels(alertname, scope, budget=budget, severity=severity, drill=drill)
        ev = json.dumps(evidence or {}, sort_keys=True, default=str, separators=(",", ":"))
        annotations = {"summary": summary[:MAX_ANNOTATION], "runbook_url": f"{self.runbook_url}#{alertname.lower()}",
                       "evidence": ev[:MAX_ANNOTATION]}
        prev = self.active.get(key)
        alert = ActiveAlert(labels, annotations, prev.starts_at if prev else now, None, self._generator(scope))
        self.active[key] = alert
        return alert

    def _for_resolve(self, scope: str, alertname: str, drill: bool, now: float) -> ActiveAlert:
        alert = self.active.pop((alertname, scope), None)
        if alert is None:  # e.g. after a restart: rebuild the identifying labels
            alert = ActiveAlert(alert_labels(alertname, scope, drill=drill), {"summary": "resolved"}, now,
                                generator_url=self._generator(scope))
        return alert

    def _due(self, now: float) -> list[ActiveAlert]:
        return [a for a in self.active.values()
                if a.last_posted is None or now - a.last_posted >= self.repost_interval]

    # ------------------------------------------------------------------ I/O

    async def post(self, alerts: list[dict[str, Any]]) -> None:
        """POST a list of alerts, retrying transient failures."""
        last: str = ""
        for attempt in range(self.retries + 1):
            try:
                resp = await self._client.post(self._url(), json=alerts)
                if resp.status_code < 300:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if not (resp.status_code == 429 or resp.status_code >= 500):
                    raise AlertmanagerError(last)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                await self._sleep(self._delay(attempt))
        raise AlertmanagerError(f"giving up after {self.retries + 1} attempts: {last}")

    async def fire(self, scope: str, *, summary: str, evidence: Mapping[str, Any] | None = None,
                   alertname: str = ALERT_ESCALATED, budget: str | None = None, severity: str = "page",
                   drill: bool = False, now: float | None = None) -> dict[str, Any]:
        """Register and post a firing alert; returns the posted payload."""
        now = time.time() if now is None else now
        alert = self._build(scope, alertname=alertname, summary=summary, evidence=evidence, budget=budget,
                            severity=severity, drill=drill, now=now)
        payload = alert.payload(now, self.repost_interval)
        await self.post([payload])
        alert.last_posted = now
        return payload

    async def resolve(self, scope: str, *, alertname: str = ALERT_ESCALATED, drill: bool = False,
                      now: float | None = None) -> dict[str, Any]:
        """Post the alert with ``endsAt = now`` and forget it."""
        now = time.time() if now is None else now
        payload = self._for_resolve(scope, alertname, drill, now).payload(now, self.repost_interval, resolved=True)
        await self.post([payload])
        return payload

    async def repost_due(self, now: float | None = None) -> int:
        """Re-post active alerts not posted for ``repost_interval``; returns how many were sent."""
        now = time.time() if now is None else now
        due = self._due(now)
        if due:
            await self.post([a.payload(now, self.repost_interval) for a in due])
            for a in due:
                a.last_posted = now
        return len(due)
