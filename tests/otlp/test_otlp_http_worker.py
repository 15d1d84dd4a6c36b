"""OTLP/HTTP straight into a running worker: the real OpenTelemetry exporter posts to ``/v1/traces``.

A small deployment points an SDK at tripwire without a Collector or Kafka producer of its own: the
worker maps the spans (three conventions), answers as OTLP does, and the events count like any other.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers.support import WorkerProc, ingest_worker, wait_for

pytestmark = pytest.mark.broker

TOKEN = "ingest-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def w(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:
    with ingest_worker(broker, tmp_path_factory.mktemp("otlp-http"), "otlphttp", TOKEN) as worker:
        yield worker


def test_the_real_otlp_http_exporter_into_the_worker(w: WorkerProc) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-agent"}))
    exporter = OTLPSpanExporter(endpoint=f"{w.web}/v1/traces", compression=Compression.Gzip,
                                headers={"Authorization": f"Bearer {TOKEN}"})
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for _ in range(3):  # OpenInference TOOL spans
        with tracer.start_as_current_span("lookup", attributes={"openinference.span.kind": "TOOL",
                                                                "tool.name": "lookup", "input.value": "SECRET"}):
            pass
    with tracer.start_as_current_span("pii", attributes={"openinference.span.kind": "GUARDRAIL"}) as guard:
        guard.set_status(Status(StatusCode.ERROR))  # a failed guardrail: a near-miss
    with tracer.start_as_current_span("execute_tool send", attributes={"gen_ai.operation.name": "execute_tool",
                                                                        "gen_ai.tool.name": "send"}):
        pass
    provider.shutdown()

    wait_for(lambda: w.metric("tripwire_events_total", kind="tool_call") >= 4, 30, "the exported tool calls counted")
    assert w.metric("tripwire_events_total", kind="tool_call") == 4
    wait_for(lambda: w.metric("tripwire_events_total", kind="monitor_flag") >= 1, 30, "the guardrail flag counted")


def test_otlp_json_partial_success_and_errors(w: WorkerProc) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175", "name": "t",
            "endTimeUnixNano": str(int(__import__("time").time() * 1e9)),
            "attributes": [{"key": "openinference.span.kind", "value": {"stringValue": "TOOL"}},
                           {"key": "tool.name", "value": {"stringValue": "bad\u0001tool"}}]}
    body = json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "json-agent"}}]}, "scopeSpans": [{"spans": [span]}]}]})
    r = httpx.post(f"{w.web}/v1/traces", content=gzip.compress(body.encode()), timeout=10,
                   headers={**auth, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["partialSuccess"]["rejectedSpans"] == "1"  # the poison tool name: refused, not forwarded
    r = httpx.post(f"{w.web}/v1/traces", content=b"\x0a\x03abc", timeout=10,
                   headers={**auth, "Content-Type": "application/x-protobuf"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/x-protobuf")
    r = httpx.post(f"{w.web}/v1/traces", content=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 401  # the same token as tripwire's own events
