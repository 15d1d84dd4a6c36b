"""Issue #13 through a real broker and a real worker: poison ids on every ingest path.

An event whose agent id, tool or tenant the scope grammar refuses used to pass the schema and
then crash the worker in its evaluation loop (ScopeError), taking /v1/authz down with it. Now
it is refused at decode time: dead-lettered with reason ``invalid_id`` (Kafka ``agent-traces``
and the ``otlp_spans`` topic) or refused in the reply (``POST /v1/traces``), counted in
``tripwire_events_rejected_total{reason="invalid_id"}``, and the worker keeps counting the
good events around it, keeps opening breakers and keeps answering /v1/authz.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from breakers.scope import is_valid_scope
from helpers.hostile import (INVALID_ID, alive_or_fail, allowed, authz, calls, otlp_incident,
                             otlp_request, otlp_span, poison, poisoned, run_tag, tripping_burst, wait_worker)
from streams.kafka.producer import TraceProducer
from helpers.support import WorkerProc, consume_all, ingest_worker

pytestmark = pytest.mark.broker

INGEST_TOKEN = "ingest-" + run_tag() + run_tag()


@pytest.fixture(scope="module")
def w(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:
    with ingest_worker(broker, tmp_path_factory.mktemp("hostile-ingest"), "hostile", INGEST_TOKEN) as worker:
        yield worker


def _rejected(w: WorkerProc) -> float:
    return w.metric("tripwire_events_rejected_total", reason=INVALID_ID)


def _counted(w: WorkerProc) -> float:
    return w.metric("tripwire_events_total")


def _opened(w: WorkerProc, agent: str, what: str) -> None:
    """Wait until the default policy's critical-incident budget denies ``agent`` (breaker open)."""
    wait_worker(w, lambda: authz(w, agent, "shell").status_code == 403, 30, what)
    r = authz(w, agent, "shell")
    assert (r.status_code, r.headers["X-Tripwire-State"]) == (403, "open"), r.headers


def _still_serving(w: WorkerProc, good_agent: str) -> None:
    alive_or_fail(w, "after the poison")
    assert httpx.get(f"{w.web}/readyz", timeout=5).status_code == 200
    r = authz(w, good_agent, "shell")
    assert r.status_code == 200, (r.status_code, r.text)
    # no poison reached the breakers: every recorded breaker state has a valid scope
    r = httpx.get(f"{w.web}/v1/breakers", timeout=5)
    assert r.status_code == 200, r.text
    assert [s for s in (item["scope"] for item in r.json()["breakers"]) if not is_valid_scope(s)] == []


def _dead_letters(broker: Any, w: WorkerProc, ids: set[str]) -> list[tuple[dict[str, Any], dict[str, Any], Any]]:
    """(DLQ record, its payload, the Kafka record) of the dead letters whose payload is one of ``ids``."""
    out = []
    for rec in consume_all(broker.bootstrap, w.topics.dlq, expect=10**6, timeout=3):
        body = json.loads(rec.value)
        try:
            payload = json.loads(base64.b64decode(body["payload_b64"]))
        except ValueError:
            continue
        if isinstance(payload, dict) and payload.get("event_id") in ids:
            out.append((body, payload, rec))
    return out


def test_poison_ids_on_agent_traces_are_dead_lettered_and_the_worker_keeps_deciding(broker: Any,
                                                                                    w: WorkerProc) -> None:
    run = run_tag()
    trip, good = f"trip-{run}", f"good-{run}"
    rejected0, counted0 = _rejected(w), _counted(w)
    bad = poison(run)
    p = TraceProducer(broker.bootstrap, w.topics.traces)
    poisons: list[dict[str, Any]] = []
    good_events = 0
    # 1. each poison alone in its message (keyed by its agent id, as an emitter would)
    for field, value in bad:
        ev = poisoned(good, field, value)
        poisons.append(ev)
        p.send_raw(ev["agent_id"].encode(), orjson.dumps(ev))
    # 2. an un-keyed batch (a gateway emitting for several agents): a breaker-worthy burst of `trip`
    #    with poison of other agents and of `trip` itself between its events
    burst = tripping_burst(trip)
    mixed = [*burst[:110], poisoned(f"x-{run}", "agent_id", f"mix\x1b-{run}", "incident"), *burst[110:220],
             poisoned(trip, "tool", f"t-{run}/tool:x"), *burst[220:], poisoned(trip, "tenant", f"a-{run}/b")]
    poisons += [e for e in mixed if e not in burst]
    p.send_raw(None, orjson.dumps(mixed))
    good_events += len(burst)
    # 3. a batch keyed by its agent, poison in the tool and the tenant of that agent's own events
    keyed = [*calls(good, 5), poisoned(good, "tool", f"k\x01-{run}"), *calls(good, 5),
             poisoned(good, "tenant", f"k-{run}/t")]
    poisons += [keyed[5], keyed[11]]
    p.send_batch(good, keyed)
    good_events += 10
    # 4. tab, newline, CR, quotes and plain slashes stay valid ids
    for field, value in allowed(run):
        ev = poisoned(good, field, value, "tool_call")
        p.send_raw(ev["agent_id"].encode(), orjson.dumps(ev))
        good_events += 1
    p.close()

    n = len(poisons)
    wait_worker(w, lambda: _rejected(w) - rejected0 >= n, 30, f"{n} invalid_id rejects counted")
    wait_worker(w, lambda: _counted(w) - counted0 >= good_events, 30, f"the {good_events} good events counted")
    _opened(w, trip, f"the breaker of {trip} opened (its burst shared batches with the poison)")
    assert _rejected(w) - rejected0 == n
    assert _counted(w) - counted0 == good_events
    _still_serving(w, good)

    letters = _dead_letters(broker, w, {e["event_id"] for e in poisons})
    assert len(letters) == n, [b["reason"] for b, _, _ in letters]
    for body, payload, rec in letters:
        assert body["reason"] == INVALID_ID, body
        assert dict(rec.headers)["tripwire-reason"] == INVALID_ID.encode()
        assert body["source"]["topic"] == w.topics.traces
    indexed = {payload["event_id"]: body["source"]["index"] for body, payload, _ in letters}
    assert indexed[mixed[110]["event_id"]] == 110 and indexed[keyed[11]["event_id"]] == 11
    assert indexed[poisons[0]["event_id"]] is None

    # issue #13's evaluation guard is exported (nothing failed: every poison was refused up front)
    assert "tripwire_evaluation_errors_total" in w.metrics_text()
    assert w.metric("tripwire_evaluation_errors_total") == 0


def test_poison_ids_posted_to_v1_traces_are_refused_and_the_good_lines_go_through(w: WorkerProc) -> None:
    run = run_tag()
    trip = f"http-trip-{run}"
    counted0 = _counted(w)
    burst = tripping_burst(trip)
    lines: list[dict[str, Any]] = []
    for i, ev in enumerate(burst):
        lines.append(ev)
        if i % 20 == 0 and i // 20 < len(poison(run)):
            field, value = poison(run)[i // 20]
            lines.append(poisoned(trip, field, value))
    bad_lines = [i + 1 for i, ev in enumerate(lines) if ev not in burst]
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/x-ndjson"}
    r = httpx.post(f"{w.web}/v1/traces", content=b"\n".join(orjson.dumps(x) for x in lines), headers=headers,
                   timeout=30)
    assert r.status_code == 207, (r.status_code, r.text[:500])
    body = r.json()
    assert body["accepted"] == len(burst)
    assert [(x["line"], x["reason"]) for x in body["rejected"]] == [(i, INVALID_ID) for i in bad_lines]

    # a JSON body of one poison event: nothing accepted
    r = httpx.post(f"{w.web}/v1/traces", content=orjson.dumps(poisoned(f"h-{run}", "agent_id", f"\x1b]0;pwn\x07{run}")),
                   headers={**headers, "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, (r.status_code, r.text[:500])
    assert [x["reason"] for x in r.json()["rejected"]] == [INVALID_ID]

    wait_worker(w, lambda: _counted(w) - counted0 >= len(burst), 30, f"the {len(burst)} posted events counted")
    _opened(w, trip, f"the breaker of {trip} opened")
    assert _counted(w) - counted0 == len(burst)
    _still_serving(w, f"http-good-{run}")


def test_poison_ids_in_otlp_spans_are_dead_lettered_and_the_worker_keeps_deciding(broker: Any,
                                                                                 w: WorkerProc) -> None:
    run = run_tag()
    trip, good = f"otlp-trip-{run}", f"otlp-good-{run}"
    rejected0 = _rejected(w)
    tool_calls0 = w.metric("tripwire_events_total", kind="tool_call")
    poison_spans = [
        otlp_span(f"otlp\x01bad-{run}"),                                  # service.name with a control character
        otlp_span(f"otlp-bad-{run}/tool:shell", op="apply_guardrail", tool=None,
                  gen_ai__guardrail__action="blocked", gen_ai__guardrail__severity="high"),
        otlp_span(good, tool=f"sh\x1bell-{run}"),
        otlp_span(good, tool=f"a-{run}/tool:b"),
        otlp_span(good, tenant__id=f"acme-{run}/x"),
    ]
    spans = ([otlp_span(trip, tool="shell") for _ in range(110)] + poison_spans[:2]
             + [otlp_span(trip, tool="shell") for _ in range(110)] + [otlp_incident(trip) for _ in range(12)]
             + poison_spans[2:] + [otlp_span(good), otlp_span(good)])
    p = TraceProducer(broker.bootstrap, w.topics.otlp)
    p.send_raw(None, orjson.dumps(otlp_request(spans)))
    p.close()

    n = len(poison_spans)
    wait_worker(w, lambda: _rejected(w) - rejected0 >= n, 30, f"{n} OTLP spans dead-lettered as invalid_id")
    wait_worker(w, lambda: w.metric("tripwire_events_total", kind="tool_call") - tool_calls0 >= 222, 30,
                "the 222 good execute_tool spans counted")
    _opened(w, trip, f"the breaker of {trip} opened (its spans shared the export with the poison)")
    assert _rejected(w) - rejected0 == n
    _still_serving(w, good)

    span_ids = {s["spanId"] for _, s in poison_spans}
    letters = []
    for rec in consume_all(broker.bootstrap, w.topics.dlq, expect=10**6, timeout=3):
        body = json.loads(rec.value)
        if body["source"]["topic"] != w.topics.otlp:
            continue
        payload = json.loads(base64.b64decode(body["payload_b64"]))
        if str(payload.get("event_id", "")).split(":")[-1] in span_ids:
            letters.append((body, rec))
    assert len(letters) == n, [b["reason"] for b, _ in letters]
    assert {b["reason"] for b, _ in letters} == {INVALID_ID}
    assert {dict(rec.headers)["tripwire-reason"] for _, rec in letters} == {INVALID_ID.encode()}
