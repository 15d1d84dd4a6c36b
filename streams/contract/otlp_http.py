"""OTLP/HTTP trace export (``POST /v1/traces``) as a pure function: body in, events and the reply out.

Every OpenTelemetry SDK's and Collector's ``otlphttp`` exporter posts an
``ExportTraceServiceRequest`` to ``/v1/traces``: binary protobuf
(``Content-Type: application/x-protobuf``) or OTLP/JSON (``application/json``, an
object with ``resourceSpans``), optionally ``Content-Encoding: gzip``. The spans are
mapped exactly as those of the ``otlp_spans`` topic (:func:`streams.contract.otlp.map_request`);
the reply follows the OTLP/HTTP specification: 200 with an ``ExportTraceServiceResponse``
in the request's encoding, whose ``partialSuccess`` counts the spans refused (spans
that carry no event are accepted, not rejected), or 400 with a ``google.rpc.Status``
when the body is not a request at all.

>>> body = b'{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", '\\
...        b'"value": {"stringValue": "billing-agent"}}]}, "scopeSpans": [{"spans": [{'\\
...        b'"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "refund",'\\
...        b'"endTimeUnixNano": "1793491200250000000", "attributes": [{"key": "openinference.span.kind",'\\
...        b'"value": {"stringValue": "TOOL"}}]}]}]}]}'
>>> is_otlp(body, "application/json"), is_otlp(b'[{"kind": "tool_call"}]', "application/json")
(True, False)
>>> reply = export_traces(body, "application/json")
>>> reply.status, reply.body, [(e["kind"], e["tool"]) for e in reply.mapped.events]
(200, b'{}', [('tool_call', 'refund')])
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass

import orjson

from streams.contract.otlp import Mapped, OtlpError, _decode_proto, decode_request, map_request

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: at most this many rejected-span details go into ``partialSuccess.errorMessage``
MAX_DETAILS = 5


@dataclass(slots=True)
class OtlpHttpReply:
    """What to answer an OTLP/HTTP export, and the events to produce (``mapped``; None on a 4xx)."""

    status: int
    body: bytes
    content_type: str
    mapped: Mapped | None = None
    error: OtlpError | None = None

    @property
    def rejected_spans(self) -> int:
        return len(self.mapped.invalid) if self.mapped is not None else 0


def media_type(content_type: str | None) -> str:
    """``Content-Type`` without parameters, lower case (``application/json; charset=utf-8`` -> ``application/json``)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_otlp(body: bytes, content_type: str | None) -> bool:
    """Is this ``POST /v1/traces`` body an OTLP export (rather than tripwire's own JSON / JSON lines events)?

    Protobuf always is; JSON is when it is an object holding ``resourceSpans``. Cheap: a
    substring test, no parsing (a trace event never has a ``resourceSpans`` key).
    """
    kind = media_type(content_type)
    if kind == PROTOBUF:
        return True
    if kind != JSON:
        return False
    head = body.lstrip()[:1]
    return head == b"{" and (b'"resourceSpans"' in body or b'"resource_spans"' in body)


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """The body after ``Content-Encoding`` (identity or gzip / deflate), refusing more than ``max_bytes``.

    Raises :class:`OtlpError` (``otlp_too_large``, ``otlp_bad_encoding``).
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpError("otlp_bad_encoding", f"unsupported Content-Encoding {encoding[:40]!r} (gzip, deflate)")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise OtlpError("otlp_bad_encoding", f"cannot {encoding}-decode the body: {exc}"[:200]) from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise OtlpError("otlp_too_large", f"the decoded body is over {max_bytes} bytes")
    return out


def export_traces(body: bytes, content_type: str | None, content_encoding: str | None = None, *,
                  max_bytes: int = 1 << 20) -> OtlpHttpReply:
    """Decode, map and validate one OTLP/HTTP export; the reply to send and the events to produce."""
    kind = PROTOBUF if media_type(content_type) == PROTOBUF else JSON
    try:
        raw = decompress(body, content_encoding, max_bytes)
        if not raw:
            raise OtlpError("otlp_empty", "the request body is empty")
        doc = _decode_proto(raw) if kind == PROTOBUF else decode_request(raw)
    except OtlpError as exc:
        status = 413 if exc.reason == "otlp_too_large" else 400
        return OtlpHttpReply(status, _status_body(kind, exc), kind, error=exc)
    mapped = map_request(doc)
    return OtlpHttpReply(200, _response_body(kind, mapped), kind, mapped)


def _response_body(kind: str, mapped: Mapped) -> bytes:
    partial: dict[str, object] = {}
    if mapped.invalid:
        details = "; ".join(f"span {bad.index}: {bad.detail}" for bad in mapped.invalid[:MAX_DETAILS])
        more = len(mapped.invalid) - MAX_DETAILS
        partial = {"rejectedSpans": len(mapped.invalid),
                   "errorMessage": details + (f"; and {more} more" if more > 0 else "")}
    if kind == JSON:
        # protobuf's JSON mapping writes int64 as a string
        return orjson.dumps({"partialSuccess": {**partial, "rejectedSpans": str(partial["rejectedSpans"])}}
                            if partial else {})
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    msg = ExportTraceServiceResponse()
    if partial:
        msg.partial_success.rejected_spans = int(partial["rejectedSpans"])  # type: ignore[call-overload]
        msg.partial_success.error_message = str(partial["errorMessage"])
    return msg.SerializeToString()


def _status_body(kind: str, exc: OtlpError) -> bytes:
    """A ``google.rpc.Status`` (code 3, INVALID_ARGUMENT) naming what is wrong."""
    message = f"{exc.reason}: {exc.detail}"
    if kind == JSON:
        return orjson.dumps({"code": 3, "message": message})
    try:
        from google.rpc.status_pb2 import Status
    except ImportError:  # googleapis-common-protos is not installed: encode the two fields by hand
        text = message.encode()[:1000]
        return b"\x08\x03\x12" + _varint(len(text)) + text
    return Status(code=3, message=message).SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
