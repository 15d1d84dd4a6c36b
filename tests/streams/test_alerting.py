"""AlertDispatcher: transitions become fire/resolve posts, in order, retried ahead of newer ones."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import httpx

from streams.worker.alertmanager import AsyncAlertmanager
from breakers.state_machine import Transition
from streams.worker.alerting import AlertDispatcher


def _t(frm: str, to: str, scope: str = "agent:a") -> Transition:
    return Transition(scope, frm, to, "trip", f"{frm}->{to}", {}, "v1", "tripwire", 100.0, "b", False)


def test_a_failed_fire_is_retried_before_its_resolve() -> None:
    posts: list[tuple[str, bool]] = []
    down = {"on": True}

    dispatcher: list[AlertDispatcher] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if down["on"]:
            # the breaker closes while the failing post is still in flight
            dispatcher[0].note(_t("escalated", "closed"))
            down["on"] = False
            return httpx.Response(503, text="maintenance")
        for alert in json.loads(request.content):
            starts = datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00"))
            ends = datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00"))
            posts.append((alert["labels"]["alertname"], (ends - starts).total_seconds() < 60))  # resolved?
        return httpx.Response(200)

    async def run() -> tuple[dict[str, int], list[str]]:
        client = AsyncAlertmanager("http://am.invalid", client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
                                   retries=0, sleep=lambda s: asyncio.sleep(0))
        counters = {"alert_ok": 0, "alert_error": 0}
        failures: list[str] = []

        async def on_failure(scope: str, to: str, error: str) -> None:
            failures.append(to)

        d = AlertDispatcher(client, counters, on_failure)
        dispatcher.append(d)
        d.note(_t("closed", "escalated"))
        await d.flush()                      # Alertmanager down: kept, counted, reported
        assert len(d.pending) == 2 and failures == ["escalated"]
        await d.flush()
        return counters, failures

    counters, _ = asyncio.run(run())
    assert counters == {"alert_ok": 2, "alert_error": 1}
    assert posts == [("TripwireBreakerEscalated", False), ("TripwireBreakerEscalated", True)]  # fire, then resolve


def test_same_state_actions_do_not_page() -> None:
    d = AlertDispatcher(AsyncAlertmanager("http://am.invalid"), {"alert_ok": 0, "alert_error": 0}, None)  # type: ignore[arg-type]
    d.note(_t("escalated", "escalated"))
    assert d.pending == []
