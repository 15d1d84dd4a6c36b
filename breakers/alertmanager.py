"""Alertmanager API v2 client: fire / resolve / re-post breaker alerts (httpx).

``POST {base}/api/v2/alerts`` takes a JSON list of alerts. A firing alert carries
``endsAt = now + 4 × repost_interval`` (as Prometheus does) and is re-posted by
:meth:`repost_due` every ``repost_interval`` until resolved, so Alertmanager keeps it active while
tripwire runs and lets it lapse if tripwire dies (catch that with a separate "tripwire down" rule).
Resolving posts the same labels with ``endsAt = now``.

Transient failures (transport errors, 429, 5xx) are retried with exponential back-off and full
jitter; other 4xx raise :class:`AlertmanagerError` at once. An alert that could not be posted stays
in the registry and goes out again with the next :meth:`repost_due`.

:class:`AsyncAlertmanager` (httpx.AsyncClient, for the asyncio worker) and :class:`Alertmanager`
(httpx.Client, for the CLI) share the payload and registry logic.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import httpx

from .scope import ScopeError, parse_scope

ALERT_ESCALATED = "TripwireBreakerEscalated"
ALERT_OPEN = "TripwireBreakerOpen"
DEFAULT_RUNBOOK = "https://github.com/tripwire/tripwire/blob/main/docs/runbooks.md"  # + '#<alertname lower>'
MAX_ANNOTATION = 4000


class AlertmanagerError(RuntimeError):
    """Alertmanager rejected the alerts or stayed unreachable after all retries."""


def rfc3339(ts: float) -> str:
    """Epoch seconds → RFC 3339 UTC with milliseconds.

    >>> rfc3339(0)
    '1970-01-01T00:00:00.000Z'
    """
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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


@dataclass
class _Core:
    """Shared state and payload logic of both clients."""

    base_url: str
    generator_url: str = "http://127.0.0.1:6066/v1/breakers"
    runbook_url: str = DEFAULT_RUNBOOK
    repost_interval: float = 60.0
    retries: int = 4
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    rng: Callable[[], float] = random.random
    active: dict[tuple[str, str], ActiveAlert] = field(default_factory=dict)

    def _delay(self, attempt: int) -> float:
        """Full-jitter exponential back-off for retry ``attempt`` (0-based)."""
        return self.rng() * min(self.backoff_max, self.backoff_base * (2 ** attempt))

    def _url(self) -> str:
        return self.base_url.rstrip("/") + "/api/v2/alerts"

    def _build(self, scope: str, *, alertname: str, summary: str, evidence: Mapping[str, Any] | None,
               budget: str | None, severity: str, drill: bool, now: float) -> ActiveAlert:
        key = (alertname, scope)
        labels = alert_labels(alertname, scope, budget=budget, severity=severity, drill=drill)
        ev = json.dumps(evidence or {}, sort_keys=True, default=str, separators=(",", ":"))
        annotations = {"summary": summary[:MAX_ANNOTATION], "runbook_url": f"{self.runbook_url}#{alertname.lower()}",
                       "evidence": ev[:MAX_ANNOTATION]}
        prev = self.active.get(key)
        alert = ActiveAlert(labels, annotations, prev.starts_at if prev else now, None,
                            f"{self.generator_url.rstrip('/')}/{_quote(scope)}")
        self.active[key] = alert
        return alert

    def _for_resolve(self, scope: str, alertname: str, drill: bool, now: float) -> ActiveAlert:
        alert = self.active.pop((alertname, scope), None)
        if alert is None:  # e.g. after a restart: rebuild the identifying labels
            alert = ActiveAlert(alert_labels(alertname, scope, drill=drill), {"summary": "resolved"}, now,
                                generator_url=f"{self.generator_url.rstrip('/')}/{_quote(scope)}")
        return alert

    def _due(self, now: float) -> list[ActiveAlert]:
        return [a for a in self.active.values()
                if a.last_posted is None or now - a.last_posted >= self.repost_interval]

    @staticmethod
    def _retryable(resp: httpx.Response) -> bool:
        return resp.status_code == 429 or resp.status_code >= 500


def _quote(scope: str) -> str:
    from urllib.parse import quote

    return quote(scope, safe="")


class AsyncAlertmanager(_Core):
    """Async client. ``async with AsyncAlertmanager(url) as am: await am.fire(...)``."""

    def __init__(self, base_url: str, *, client: httpx.AsyncClient | None = None, timeout: float = 5.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, **kw: Any):
        super().__init__(base_url, **kw)
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._own = client is None
        self._sleep = sleep

    async def __aenter__(self) -> "AsyncAlertmanager":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()

    async def post(self, alerts: list[dict[str, Any]]) -> None:
        """POST a list of alerts, retrying transient failures."""
        last: str = ""
        for attempt in range(self.retries + 1):
            try:
                resp = await self._client.post(self._url(), json=alerts)
                if resp.status_code < 300:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if not self._retryable(resp):
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


class Alertmanager(_Core):
    """Blocking client with the same API as :class:`AsyncAlertmanager`."""

    def __init__(self, base_url: str, *, client: httpx.Client | None = None, timeout: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep, **kw: Any):
        super().__init__(base_url, **kw)
        self._client = client or httpx.Client(timeout=timeout)
        self._own = client is None
        self._sleep = sleep

    def __enter__(self) -> "Alertmanager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._client.close()

    def post(self, alerts: list[dict[str, Any]]) -> None:
        last: str = ""
        for attempt in range(self.retries + 1):
            try:
                resp = self._client.post(self._url(), json=alerts)
                if resp.status_code < 300:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if not self._retryable(resp):
                    raise AlertmanagerError(last)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                self._sleep(self._delay(attempt))
        raise AlertmanagerError(f"giving up after {self.retries + 1} attempts: {last}")

    def fire(self, scope: str, *, summary: str, evidence: Mapping[str, Any] | None = None,
             alertname: str = ALERT_ESCALATED, budget: str | None = None, severity: str = "page",
             drill: bool = False, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        alert = self._build(scope, alertname=alertname, summary=summary, evidence=evidence, budget=budget,
                            severity=severity, drill=drill, now=now)
        payload = alert.payload(now, self.repost_interval)
        self.post([payload])
        alert.last_posted = now
        return payload

    def resolve(self, scope: str, *, alertname: str = ALERT_ESCALATED, drill: bool = False,
                now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        payload = self._for_resolve(scope, alertname, drill, now).payload(now, self.repost_interval, resolved=True)
        self.post([payload])
        return payload

    def repost_due(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        due = self._due(now)
        if due:
            self.post([a.payload(now, self.repost_interval) for a in due])
            for a in due:
                a.last_posted = now
        return len(due)


def alert_for_transition(to_state: str) -> str | None:
    """Which alert a breaker state raises: escalated → Escalated, open/forced_open → Open."""
    if to_state == "escalated":
        return ALERT_ESCALATED
    if to_state in ("open", "forced_open"):
        return ALERT_OPEN
    return None
