"""The worker's Alertmanager client against httpx.MockTransport (no network)."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from streams.worker.alertmanager import (
    ALERT_ESCALATED, ALERT_OPEN, AlertmanagerError, AsyncAlertmanager, alert_for_transition, alert_labels, rfc3339,
)

T0 = 1_700_000_000.0


class Recorder:
    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.bodies = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v2/alerts" and request.method == "POST"
        self.bodies.append(json.loads(request.content))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == "boom":
            raise httpx.ConnectError("refused")
        return httpx.Response(status, text="")


def make(rec, **kw):
    sleeps = []

    async def sleep(d):
        sleeps.append(d)

    am = AsyncAlertmanager("http://am:9093/", client=httpx.AsyncClient(transport=httpx.MockTransport(rec)),
                           sleep=sleep, rng=lambda: 1.0, **kw)
    return am, sleeps


def run(body):
    """Run an async test body (one event loop per test)."""
    return asyncio.run(body())


def test_labels_from_scope():
    assert alert_labels(ALERT_OPEN, "tenant:acme/agent:a/tool:shell", budget="b", drill=True) == {
        "alertname": ALERT_OPEN, "scope": "tenant:acme/agent:a/tool:shell", "severity": "page", "drill": "true",
        "agent": "a", "tool": "shell", "tenant": "acme", "budget": "b"}
    assert "agent" not in alert_labels(ALERT_OPEN, "global")
    assert alert_for_transition("escalated") == ALERT_ESCALATED
    assert alert_for_transition("forced_open") == ALERT_OPEN and alert_for_transition("closed") is None


def test_fire_payload_and_resolve():
    rec = Recorder()
    am, _ = make(rec, repost_interval=60, generator_url="http://tw:6066/v1/breakers")
    p = run(lambda: am.fire("agent:a", summary="burn 18x", evidence={"1h": {"tool_calls": 210}}, budget="wnm", now=T0))
    (body,) = rec.bodies[0]
    assert body == p
    assert body["labels"]["alertname"] == ALERT_ESCALATED and body["labels"]["budget"] == "wnm"
    assert body["annotations"]["summary"] == "burn 18x"
    assert json.loads(body["annotations"]["evidence"]) == {"1h": {"tool_calls": 210}}
    assert body["annotations"]["runbook_url"].endswith("runbooks.md#tripwirebreakerescalated")
    assert body["startsAt"] == rfc3339(T0) and body["endsAt"] == rfc3339(T0 + 240)
    assert body["generatorURL"] == "http://tw:6066/v1/breakers/agent%3Aa"
    r = run(lambda: am.resolve("agent:a", now=T0 + 30))
    assert r["labels"] == body["labels"] and r["endsAt"] == rfc3339(T0 + 30) and r["startsAt"] == body["startsAt"]
    assert am.active == {}


def test_resolve_unknown_alert_rebuilds_labels():
    rec = Recorder()
    am, _ = make(rec)
    r = run(lambda: am.resolve("agent:a/tool:x", alertname=ALERT_OPEN, now=T0))
    assert r["labels"]["tool"] == "x" and r["endsAt"] == r["startsAt"]


def test_retry_with_backoff_then_success():
    rec = Recorder([503, "boom", 429, 200])
    am, sleeps = make(rec, backoff_base=0.5, backoff_max=1.5)
    run(lambda: am.fire("agent:a", summary="s", now=T0))
    assert len(rec.bodies) == 4
    assert sleeps == [0.5, 1.0, 1.5]  # rng()=1 → the full capped exponential delay


def test_jitter_scales_delay():
    am, _ = make(Recorder(), backoff_base=1.0, backoff_max=100)
    am.rng = lambda: 0.25
    assert [am._delay(i) for i in range(4)] == [0.25, 0.5, 1.0, 2.0]


def test_client_error_not_retried_and_gives_up():
    rec = Recorder([400])
    am, sleeps = make(rec)
    with pytest.raises(AlertmanagerError, match="HTTP 400"):
        run(lambda: am.fire("agent:a", summary="s", now=T0))
    assert len(rec.bodies) == 1 and sleeps == []
    rec = Recorder([500] * 10)
    am, sleeps = make(rec, retries=2)
    with pytest.raises(AlertmanagerError, match="giving up after 3 attempts"):
        run(lambda: am.fire("agent:a", summary="s", now=T0))
    assert ("ALERT_ESCALATED" and (ALERT_ESCALATED, "agent:a")) in am.active  # kept for the next repost


def test_repost_due():
    rec = Recorder()
    am, _ = make(rec, repost_interval=60)

    async def body():
        await am.fire("agent:a", summary="a", now=T0)
        await am.fire("agent:b", summary="b", alertname=ALERT_OPEN, now=T0 + 30)
        assert await am.repost_due(T0 + 59) == 0
        assert await am.repost_due(T0 + 60) == 1 and rec.bodies[-1][0]["labels"]["scope"] == "agent:a"
        assert rec.bodies[-1][0]["startsAt"] == rfc3339(T0)  # the original start is kept
        assert await am.repost_due(T0 + 95) == 1 and rec.bodies[-1][0]["labels"]["scope"] == "agent:b"
        await am.resolve("agent:a", now=T0 + 100)
        assert await am.repost_due(T0 + 1000) == 1

    run(body)


def test_async_client_same_behaviour():
    rec = Recorder([502, 200])

    async def run():
        sleeps = []

        async def sleep(d):
            sleeps.append(d)

        async with AsyncAlertmanager("http://am:9093", client=httpx.AsyncClient(transport=httpx.MockTransport(rec)),
                                     sleep=sleep, rng=lambda: 1.0, backoff_base=0.1) as am:
            await am.fire("agent:a", summary="s", drill=True, now=T0)
            assert await am.repost_due(T0 + 60) == 1
            await am.resolve("agent:a", drill=True, now=T0 + 61)
        return sleeps

    assert asyncio.run(run()) == [0.1]
    assert rec.bodies[0][0]["labels"]["drill"] == "true"
    assert rec.bodies[-1][0]["endsAt"] == rfc3339(T0 + 61)
