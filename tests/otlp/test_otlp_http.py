"""OTLP/HTTP export bodies (POST /v1/traces) → events + OTLP reply; the real OTLP/HTTP exporter as the client."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from helpers.otlp import load, to_proto_bytes

from streams.contract.otlp_http import export_traces, is_otlp


def test_json_and_protobuf_bodies_map_alike_and_answer_in_kind() -> None:
    doc = load("genai_agent_run")
    as_json = export_traces(orjson.dumps(doc), "application/json; charset=utf-8")
    as_proto = export_traces(to_proto_bytes(doc), "application/x-protobuf")
    assert as_json.status == as_proto.status == 200
    assert as_json.mapped is not None and as_proto.mapped is not None
    assert as_json.mapped.events == as_proto.mapped.events and len(as_json.mapped.events) == 4
    assert as_json.body == b"{}" and as_json.content_type == "application/json"
    assert as_proto.body == b"" and as_proto.content_type == "application/x-protobuf"  # empty response message
    zipped = export_traces(gzip.compress(orjson.dumps(doc)), "application/json", "gzip")
    assert zipped.mapped is not None and zipped.mapped.events == as_json.mapped.events


def test_partial_success_counts_the_refused_spans() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    doc = load("invalid_spans")
    reply = export_traces(orjson.dumps(doc), "application/json")
    assert reply.status == 200 and reply.rejected_spans == 2
    partial = orjson.loads(reply.body)["partialSuccess"]
    assert partial["rejectedSpans"] == "2" and "span 0: span has no traceId/spanId" in partial["errorMessage"]
    proto = export_traces(to_proto_bytes(doc), "application/x-protobuf")
    msg = ExportTraceServiceResponse.FromString(proto.body)
    assert msg.partial_success.rejected_spans == 2


@pytest.mark.parametrize(("body", "ctype", "encoding", "status", "reason"), [
    (b"", "application/json", None, 400, "otlp_empty"),
    (b"{nope", "application/json", None, 400, "otlp_invalid_json"),
    (b"\xff\xfe\x00garbage", "application/x-protobuf", None, 400, "otlp_invalid_proto"),
    (b'{"resourceSpans": []}', "application/json", "br", 400, "otlp_bad_encoding"),
    (gzip.compress(b" " * 5000), "application/json", "gzip", 413, "otlp_too_large"),
])
def test_bad_bodies_get_a_status(body: bytes, ctype: str, encoding: str | None, status: int, reason: str) -> None:
    reply = export_traces(body, ctype, encoding, max_bytes=4096)
    assert reply.status == status and reply.error is not None and reply.error.reason == reason
    assert reply.mapped is None
    if ctype == "application/json":
        assert orjson.loads(reply.body)["code"] == 3


def test_is_otlp_tells_exports_from_tripwire_events() -> None:
    assert is_otlp(b"\x0a\x00", "application/x-protobuf")
    assert is_otlp(b' {"resourceSpans": []}', "application/json")
    assert not is_otlp(b'{"kind": "tool_call", "resourceSpans_note": 1}', "application/json")
    assert not is_otlp(b'[{"kind": "tool_call"}]', "application/json")
    assert not is_otlp(b'{"resourceSpans": []}', "application/x-ndjson")


@pytest.fixture
def otlp_server() -> Iterator[tuple[str, list[Any]]]:
    """A loopback HTTP server answering /v1/traces with export_traces (what the worker's ingest does)."""
    replies: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            reply = export_traces(body, self.headers.get("Content-Type"), self.headers.get("Content-Encoding"))
            replies.append(reply)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", replies
    server.shutdown()
    server.server_close()


def test_the_real_otlp_http_exporter(otlp_server: tuple[str, list[Any]]) -> None:
    """opentelemetry-exporter-otlp-proto-http, protobuf and gzip as it sends them, OpenInference attributes."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    url, replies = otlp_server
    provider = TracerProvider(resource=Resource.create({"service.name": "http-agent"}))
    exporter = OTLPSpanExporter(endpoint=url, compression=Compression.Gzip)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("lookup", attributes={"openinference.span.kind": "TOOL",
                                                            "tool.name": "lookup", "input.value": "SECRET"}):
        pass
    with tracer.start_as_current_span("pii", attributes={"openinference.span.kind": "GUARDRAIL"}) as guard:
        guard.set_status(Status(StatusCode.ERROR))
    with tracer.start_as_current_span("GET /"):
        pass
    provider.shutdown()

    assert [r.status for r in replies] == [200, 200, 200]
    events = [e for r in replies for e in r.mapped.events]
    assert [(e["kind"], e["agent_id"], e.get("tool"), e.get("monitor")) for e in events] == [
        ("tool_call", "http-agent", "lookup", None), ("monitor_flag", "http-agent", None, "pii")]
    assert "SECRET" not in orjson.dumps(events).decode()
    assert sum(r.mapped.skipped["not_genai"] for r in replies) == 1
