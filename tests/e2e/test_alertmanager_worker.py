"""A worker paging a REAL Alertmanager, which notifies a webhook run by the test: a weighted
near-miss burn escalates an agent → firing TripwireBreakerEscalated with the breaker's labels and
evidence; an operator reset → the resolved notification.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers.e2e import (Tokens, WebhookSink, bearer, breaker, calls, flags, scope_url,
                         send_batched, serve, start_alertmanager)
from streams.kafka.producer import TraceProducer
from helpers.support import Topics, WorkerProc, require_binary, start_worker, stop_process, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

RUN = uuid.uuid4().hex[:6]
AGENT = f"am-{RUN}"
SCOPE = f"agent:{AGENT}"


@pytest.fixture(scope="module")
def stack(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    tmp = tmp_path_factory.mktemp("am-e2e")
    tokens = Tokens()
    with serve(WebhookSink) as sink:
        sink.received = []  # type: ignore[attr-defined]
        am = start_alertmanager(binary, tmp / "alertmanager", f"http://127.0.0.1:{sink.server_address[1]}/hook")
        w: WorkerProc | None = None
        try:
            w = start_worker(broker, tmp, Topics(f"am-{RUN}"), app_id=f"tw-am-{RUN}",
                             extra_env={"TRIPWIRE_ALERTMANAGER_URL": am.url, **tokens.env()})
            yield {"worker": w, "am": am, "sink": sink, "tokens": tokens, "broker": broker}
        finally:
            if w is not None:
                stop_process(w.proc)  # type: ignore[arg-type]
            stop_process(am.proc)


def notifications(sink: Any, status: str) -> list[tuple[float, dict[str, Any]]]:
    """(received at, alert) of every webhook alert for SCOPE with ``status``."""
    out = []
    for at, doc in list(sink.received):
        for alert in doc.get("alerts", []):
            if alert["labels"].get("scope") == SCOPE and alert["status"] == status:
                out.append((at, alert))
    return out


def test_escalation_pages_and_reset_resolves(stack: dict[str, Any]) -> None:
    w, am, sink, tokens = stack["worker"], stack["am"], stack["sink"], stack["tokens"]
    producer = TraceProducer(stack["broker"].bootstrap, w.topics.traces)
    try:
        # 60 calls, 30 high-severity flags: weighted rate 2.5/call = 25x the 0.10 objective over 1h and 5m
        # (> 14.4x), with 30 flags / 60 calls >= the 5 / 20 minimum evidence -> escalate (page)
        # (flags without a tool, so only the agent scope pages, not agent×tool as well)
        events = calls(AGENT, 60) + [{k: v for k, v in f.items() if k != "tool"}
                                     for f in flags(AGENT, 30, severity="high")]
        send_batched(producer, AGENT, events, batch=30)
    finally:
        producer.close()

    state = wait_for(lambda: (b := breaker(w.web, SCOPE, tokens.viewer)) and b["state"] == "escalated" and b, 30,
                     "the agent scope escalated")
    assert state["budget"] == "weighted-near-miss"

    fired = wait_for(lambda: notifications(sink, "firing"), 30, "the firing webhook notification")
    at, alert = fired[0]
    delivery = at - state["since"]
    print(f"\nescalation decision -> firing webhook via Alertmanager: {delivery * 1000:.0f} ms")
    labels = alert["labels"]
    assert labels["alertname"] == "TripwireBreakerEscalated"
    assert (labels["scope"], labels["agent"], labels["severity"], labels["drill"]) == (SCOPE, AGENT, "page", "false")
    assert labels["budget"] == "weighted-near-miss"
    evidence = json.loads(alert["annotations"]["evidence"])
    assert evidence["budget"] == "weighted-near-miss"
    assert evidence["counts"]["1h"]["near_misses"] == 30 and evidence["counts"]["1h"]["tool_calls"] == 60
    assert "weighted near-miss burn" in alert["annotations"]["summary"]

    # Alertmanager's own API shows it active
    active = am.alerts(scope=SCOPE)
    assert [a["labels"]["alertname"] for a in active] == ["TripwireBreakerEscalated"]
    assert active[0]["status"]["state"] == "active"

    r = httpx.post(scope_url(w.web, SCOPE, "reset"), headers=bearer(tokens.admin),
                   json={"reason": "e2e: on-call reviewed the flags"}, timeout=10)
    assert r.status_code == 200, r.text
    reset_at = time.time()
    resolved = wait_for(lambda: notifications(sink, "resolved"), 30, "the resolved webhook notification")
    r_at, r_alert = resolved[0]
    print(f"reset -> resolved webhook: {(r_at - reset_at) * 1000:.0f} ms")
    assert r_alert["labels"]["alertname"] == "TripwireBreakerEscalated"
    assert r_alert["labels"]["scope"] == SCOPE
    wait_for(lambda: not [a for a in am.alerts(scope=SCOPE) if a["status"]["state"] == "active"], 15,
             "Alertmanager no longer lists the alert as active")
    # one page for one escalation: no other alert name was ever sent for this scope
    assert {a["labels"]["alertname"] for _, a in notifications(sink, "firing")} == {"TripwireBreakerEscalated"}
