"""OTLP through the real broker: spans written to the otlp topic become counted trace events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers.otlp import load, shifted_to_now, to_proto_bytes

from streams.ops.procutil import stop_process
from streams.kafka.producer import TraceProducer
from helpers.support import Topics, WorkerProc, consume_all, start_worker, wait_for

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def otlp_worker(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:  # type: ignore[no-untyped-def]
    topics = Topics(f"otlp-{uuid.uuid4().hex[:6]}")
    tmp: Path = tmp_path_factory.mktemp("otlp-worker")
    w = start_worker(broker, tmp, topics, app_id=f"tw-{topics.prefix}")
    yield w
    stop_process(w.proc)  # type: ignore[arg-type]


def test_otlp_json_spans_become_counted_events_and_redelivery_dedupes(broker, otlp_worker) -> None:  # type: ignore[no-untyped-def]
    w = otlp_worker
    doc = shifted_to_now(load("genai_agent_run"))
    p = TraceProducer(broker.bootstrap, w.topics.otlp)
    p.send_raw(None, orjson.dumps(doc))
    p.flush()

    wait_for(lambda: w.metric("tripwire_events_total", kind="tool_call") >= 2, 30,
             "the two execute_tool spans counted as tool_call events")
    assert w.metric("tripwire_events_total", kind="llm_call") == 1
    wait_for(lambda: w.metric("tripwire_events_total", kind="monitor_flag") == 1, 10, "the blocking guardrail")
    assert w.metric("tripwire_otlp_spans_total", result="mapped") == 4
    assert w.metric("tripwire_otlp_spans_total", result="skipped") == 4
    assert w.metric("tripwire_otlp_spans_skipped_total", reason="not_genai") == 1
    assert w.metric("tripwire_otlp_messages_total", result="ok") == 1

    # the events went through agent-traces, keyed by the agent id, as one batched message
    records = consume_all(broker.bootstrap, w.topics.traces, expect=1)
    assert [r.key for r in records] == [b"travel-agent-7"]
    batch = json.loads(records[0].value)
    assert sorted(e["kind"] for e in batch) == ["llm_call", "monitor_flag", "tool_call", "tool_call"]

    # the Collector re-delivers the same export (retry): event_id = traceId:spanId dedupes it
    before = w.metric("tripwire_events_duplicate_total")
    p.send_raw(None, orjson.dumps(doc))
    p.flush()
    wait_for(lambda: w.metric("tripwire_events_duplicate_total") >= before + 4, 30, "4 duplicates dropped")
    assert w.metric("tripwire_events_total", kind="tool_call") == 2

    # binary protobuf (otlp_proto) of another run of the same agent
    proto_doc = shifted_to_now(load("genai_agent_run"))
    for rs in proto_doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                s["traceId"] = "1" * 32
    p.send_raw(None, to_proto_bytes(proto_doc))
    p.close()
    wait_for(lambda: w.metric("tripwire_events_total", kind="tool_call") >= 4, 30, "proto spans counted")


def test_bad_otlp_input_is_dead_lettered_with_reason(broker, otlp_worker) -> None:  # type: ignore[no-untyped-def]
    w = otlp_worker
    p = TraceProducer(broker.bootstrap, w.topics.otlp)
    p.send_raw(None, b"{not json")
    p.send_raw(None, orjson.dumps(shifted_to_now(load("invalid_spans"))))
    p.close()

    wait_for(lambda: w.metric("tripwire_events_rejected_total", reason="otlp_invalid_span") == 2, 30,
             "2 invalid spans dead-lettered")
    assert w.metric("tripwire_events_rejected_total", reason="otlp_invalid_json") == 1
    assert w.metric("tripwire_otlp_messages_total", result="rejected") == 1
    assert w.metric("tripwire_otlp_spans_total", result="invalid") == 2

    letters = [json.loads(r.value) for r in consume_all(broker.bootstrap, w.topics.dlq, expect=3)]
    assert sorted(d["reason"] for d in letters) == ["otlp_invalid_json", "otlp_invalid_span", "otlp_invalid_span"]
    assert {d["source"]["topic"] for d in letters} == {w.topics.otlp}
    too_long = next(d for d in letters if d["source"]["index"] == 1)
    assert too_long["detail"].startswith("tool:")
    # the good span of the same export still made it to agent-traces, under its own agent
    wait_for(lambda: b"a-bad" in {r.key for r in consume_all(broker.bootstrap, w.topics.traces, 10**6, timeout=2)},
             20, "the valid span of the export forwarded")
