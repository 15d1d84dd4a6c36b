"""Ingest through a real broker: good events counted, bad input dead-lettered with reason."""

from __future__ import annotations

import base64
import json
import time

import orjson
import pytest

from helpers.support import consume_all, wait_for
from streams.kafka.producer import TraceProducer

pytestmark = pytest.mark.broker


def _ev(i: int, agent: str = "agent-a", **kw: object) -> dict:
    ev = {"schema_version": "1", "event_id": f"ev-{i}", "ts": int(time.time() * 1000), "agent_id": agent,
          "kind": "tool_call", "tool": "search"}
    ev.update(kw)
    return ev


def test_good_and_bad_messages_through_real_broker(broker, worker) -> None:
    p = TraceProducer(broker.bootstrap, worker.topics.traces)
    weird = 'agent "quoted" \\ back\nslash'
    p.send_batch("agent-a", [_ev(1)])
    p.send_raw(b"agent-a", b"{not json")                       # invalid_json
    p.send_raw(b"agent-a", b"\xff\xfe\xfa")                    # invalid_utf8
    p.send_raw(b"agent-a", b"")                                # empty
    p.send_raw(b"agent-a", b"[1,2]")                           # not_object x2 (batch elements)
    p.send_raw(b"agent-a", b'{"a": NaN}')                      # invalid_json (NaN)
    p.send_batch("agent-a", [_ev(2), _ev(3, kind="bogus"), _ev(4, attempt=0), _ev(5)])  # 2 good, 2 bad
    p.send_batch("agent-a", [_ev(2)])                          # duplicate of ev-2
    p.send_batch(weird, [_ev(6, agent=weird)])                 # odd but valid agent id
    p.send_raw(b"agent-a", orjson.dumps(_ev(7, ts=int((time.time() + 3 * 86400) * 1000))))  # future
    p.send_raw(b"agent-a", b"[" * 5000 + b"]" * 5000)          # nesting bomb
    p.send_batch("agent-a", [_ev(8)])
    p.close()

    wait_for(lambda: worker.metric("tripwire_events_total") >= 5, 30, "5 good events counted")
    assert worker.metric("tripwire_events_total", kind="tool_call") == 5
    assert worker.metric("tripwire_events_duplicate_total") == 1
    expected = {"invalid_json": 3, "invalid_utf8": 1, "empty": 1, "not_object": 2, "unknown_kind": 1,
                "schema": 1, "future_timestamp": 1}
    wait_for(lambda: worker.metric("tripwire_events_rejected_total") >= sum(expected.values()), 30, "rejects counted")
    for reason, n in expected.items():
        assert worker.metric("tripwire_events_rejected_total", reason=reason) == n, reason

    records = consume_all(broker.bootstrap, worker.topics.dlq, expect=sum(expected.values()))
    assert len(records) == sum(expected.values())
    bodies = [json.loads(r.value) for r in records]
    reasons = sorted(b["reason"] for b in bodies)
    assert reasons == sorted(r for r, n in expected.items() for _ in range(n))
    for rec, body in zip(records, bodies):
        assert dict(rec.headers)["tripwire-reason"].decode() == body["reason"]
        assert body["source"]["topic"] == worker.topics.traces
        assert isinstance(body["source"]["offset"], int)
    kind_reject = next(b for b in bodies if b["reason"] == "unknown_kind")
    assert kind_reject["source"]["index"] == 1
    assert json.loads(base64.b64decode(kind_reject["payload_b64"]))["event_id"] == "ev-3"

    # /metrics stays parseable with hostile label values around
    text = worker.metrics_text()
    assert "tripwire_events_total" in text


def test_readyz_and_healthz(worker) -> None:
    import httpx

    assert httpx.get(f"{worker.web}/healthz").json()["status"] == "ok"
    body = httpx.get(f"{worker.web}/readyz").json()
    assert body["ready"] is True
    assert worker.metric("tripwire_worker_ready") == 1


def test_every_exported_metric_is_in_the_catalogue(worker) -> None:
    """docs/metrics.md is the contract for dashboards and alerts: nothing exported goes undocumented."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.observability.catalogue import catalogue

    documented = set(catalogue())
    exported = {f.name if f.type != "counter" else f.name + "_total"
                for f in text_string_to_metric_families(worker.metrics_text()) if f.name.startswith("tripwire_")}
    assert exported, "no tripwire_ metric exported"
    assert exported - documented == set()
