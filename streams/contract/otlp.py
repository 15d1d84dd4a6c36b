"""Map OpenTelemetry spans (OTLP) of agents to schema-v1 trace events. Pure: no Kafka, no faust.

Input is what the OpenTelemetry Collector's Kafka exporter writes: one
``ExportTraceServiceRequest`` per message, encoded ``otlp_json`` (protobuf JSON
mapping: ``resourceSpans[].scopeSpans[].spans[]``, hex ``traceId``/``spanId``,
``*UnixNano`` times as strings, attributes as ``[{key, value: {stringValue|...}}]``)
or ``otlp_proto`` (binary protobuf; needs the ``opentelemetry-proto`` package).
:func:`decode_request` tells the two apart by the first byte ('{' or '[' is JSON: a
protobuf ExportTraceServiceRequest starts with the tag of field 1, 0x0a).

Each span is mapped on its own by :func:`map_span`, whichever of the three span
conventions it follows — OTel GenAI, OpenInference, OpenLLMetry (precedence and
attribute names in :mod:`streams.contract.otlp_conventions`, tables in docs/connect.md);
spans that carry no trace event (HTTP spans, ``create_agent``, CHAIN spans, an agent
span without an outcome, a guardrail that allowed) are *skipped* with a bounded reason; spans that map but fail the
schema are *invalid*. ``event_id`` is ``<traceId>:<spanId>``, so a re-delivered
export dedupes downstream.

>>> doc = {"resourceSpans": [{"resource": {"attributes": [
...     {"key": "service.name", "value": {"stringValue": "billing-agent"}}]},
...   "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c",
...     "spanId": "eee19b7ec3c1b174", "name": "execute_tool refund",
...     "startTimeUnixNano": "1793491200000000000", "endTimeUnixNano": "1793491200250000000",
...     "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
...                    {"key": "gen_ai.tool.name", "value": {"stringValue": "refund"}}]}]}]}]}
>>> out = map_request(doc)
>>> ev = out.events[0]
>>> ev["kind"], ev["agent_id"], ev["tool"], ev["latency_ms"], ev["status"], ev["event_id"]
('tool_call', 'billing-agent', 'refund', 250.0, 'ok', '5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174')
"""

from __future__ import annotations

import base64
import binascii
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from streams.contract.decode import classify as classify_error
from streams.contract.otlp_conventions import (
    AGENT_KEYS,
    COST_KEYS,
    DECISIONS,  # noqa: F401 - re-exported: the guardrail vocabulary
    GUARDRAIL_DECISION_KEYS,  # noqa: F401
    GUARDRAIL_NAME_KEYS,  # noqa: F401
    INPUT_TOKEN_KEYS,
    MODEL_KEYS,
    NAME_ATTRIBUTES,
    OPENLLMETRY,
    OPERATION_KEY,
    OUTPUT_TOKEN_KEYS,
    PROVIDER_KEYS,
    SESSION_KEYS,
    TASK_KEYS,
    TENANT_KEYS,
    TOOL_CALL_ID_KEYS,
    TOOL_KEYS,
    TRIPWIRE,
    Skip,
    classify,
    first,
    guardrail_verdict,
    tool_from_span_name,
)
from streams.contract.schema import INVALID_ID, TraceEvent

# ------------------------------------------------------------------ vocabulary
#: every reason a span is skipped (the metric's label values)
SKIP_REASONS: tuple[str, ...] = (
    "not_genai",
    "unsupported_operation",
    "no_agent",
    "no_tool",
    "guardrail_allowed",
    "guardrail_no_decision",
    "no_outcome",
)
#: every reason a whole OTLP message is dead-lettered
MESSAGE_REJECT_REASONS: tuple[str, ...] = (
    "otlp_empty",
    "otlp_invalid_json",
    "otlp_invalid_proto",
    "otlp_proto_unsupported",
    "otlp_not_request",
)
#: the dead-letter reason of a span that mapped to an event the schema refuses
INVALID_SPAN_REASON = "otlp_invalid_span"

#: schema fields a span may set directly with a ``tripwire.<field>`` attribute
OVERRIDABLE = frozenset(TraceEvent.model_fields) - {"schema_version", "event_id", "ts", "attributes"}
_STATUS_ERROR = {2, "2", "STATUS_CODE_ERROR", "ERROR", "error"}


class OtlpError(ValueError):
    """A message that is not a decodable ExportTraceServiceRequest."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class InvalidSpan:
    """A span that mapped to an event the schema refuses."""

    index: int
    detail: str
    event: dict[str, Any]
    reason: str = INVALID_SPAN_REASON  # or ``invalid_id`` (an id scope parsing refuses)


@dataclass(slots=True)
class Mapped:
    """The outcome of mapping one ExportTraceServiceRequest."""

    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    invalid: list[InvalidSpan] = field(default_factory=list)

    @property
    def spans(self) -> int:
        return len(self.events) + sum(self.skipped.values()) + len(self.invalid)

    def by_agent(self) -> dict[str, list[dict[str, Any]]]:
        """The accepted events grouped by agent id (the Kafka key of agent-traces)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for ev in self.events:
            out.setdefault(ev["agent_id"], []).append(ev)
        return out


# ------------------------------------------------------------------ decoding
def decode_request(value: bytes | None) -> dict[str, Any]:
    """An OTLP message (otlp_json or otlp_proto) as the protobuf-JSON dict; raises :class:`OtlpError`."""
    if not value:
        raise OtlpError("otlp_empty", "message value is empty or null")
    head = value.lstrip()[:1]
    if head in (b"{", b"["):  # JSON; never the first byte of a protobuf ExportTraceServiceRequest
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise OtlpError("otlp_invalid_json", str(exc)[:300]) from None
    else:
        doc = _decode_proto(value)
    if not isinstance(doc, dict):
        raise OtlpError("otlp_not_request", f"expected a JSON object, got {type(doc).__name__}")
    spans = _get(doc, "resourceSpans", "resource_spans")
    if spans is None or not isinstance(spans, list):
        raise OtlpError("otlp_not_request", "no resourceSpans array: not an OTLP ExportTraceServiceRequest")
    return doc


def proto_supported() -> bool:
    """Is the ``opentelemetry-proto`` package installed (``otlp_proto`` encoding)?"""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: F401
    except ImportError:
        return False
    return True


def _decode_proto(value: bytes) -> dict[str, Any]:
    try:
        from google.protobuf.json_format import MessageToDict
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    except ImportError:
        raise OtlpError(
            "otlp_proto_unsupported",
            "binary OTLP (otlp_proto) needs the opentelemetry-proto package; or set encoding: otlp_json",
        ) from None
    msg = ExportTraceServiceRequest()
    try:
        msg.ParseFromString(value)
    except (DecodeError, ValueError) as exc:
        raise OtlpError("otlp_invalid_proto", f"not an ExportTraceServiceRequest: {str(exc)[:200]}") from None
    doc: dict[str, Any] = MessageToDict(msg)
    # protobuf JSON writes bytes as base64; OTLP/JSON writes trace and span ids as hex
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = _b64_to_hex(span[key])
    return doc


def _b64_to_hex(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError):
        return ""


# ------------------------------------------------------------------ attributes
def _get(d: Mapping[str, Any], camel: str, snake: str) -> Any:
    """A protobuf-JSON field by its lowerCamelCase name or its original proto name."""
    v = d.get(camel)
    return d.get(snake) if v is None else v


def any_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python scalar (arrays/maps as compact JSON text; bytes as base64).

    >>> [any_value({"intValue": "42"}), any_value({"doubleValue": 0.5}), any_value({"boolValue": True}),
    ...  any_value({"stringValue": "x"}), any_value({"arrayValue": {"values": [{"stringValue": "a"}]}})]
    [42, 0.5, True, 'x', '["a"]']
    """
    if not isinstance(v, dict):
        return None
    if "stringValue" in v or "string_value" in v:
        s = _get(v, "stringValue", "string_value")
        return s if isinstance(s, str) else None
    if "boolValue" in v or "bool_value" in v:
        b = _get(v, "boolValue", "bool_value")
        return b if isinstance(b, bool) else None
    if "intValue" in v or "int_value" in v:
        i = _get(v, "intValue", "int_value")
        try:
            return int(i) if not isinstance(i, bool) else None
        except (TypeError, ValueError):
            return None
    if "doubleValue" in v or "double_value" in v:
        d = _get(v, "doubleValue", "double_value")
        try:
            f = float(d) if not isinstance(d, bool) else math.nan
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None
    if "arrayValue" in v or "array_value" in v:
        values = (_get(v, "arrayValue", "array_value") or {}).get("values") or []
        return _json([any_value(x) for x in values])
    if "kvlistValue" in v or "kvlist_value" in v:
        values = (_get(v, "kvlistValue", "kvlist_value") or {}).get("values") or []
        return _json(attributes(values))
    if "bytesValue" in v or "bytes_value" in v:
        b = _get(v, "bytesValue", "bytes_value")
        return b if isinstance(b, str) else None
    return None


def _json(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def attributes(kvs: Any) -> dict[str, Any]:
    """A list of OTLP ``KeyValue`` as a dict (later duplicates win, as in the SDKs)."""
    out: dict[str, Any] = {}
    if not isinstance(kvs, list):
        return out
    for kv in kvs:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = any_value(kv.get("value"))
    return out


# ------------------------------------------------------------------ mapping
def iter_spans(doc: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource attributes, span) for every span of a request."""
    for rs in _get(doc, "resourceSpans", "resource_spans") or []:
        if not isinstance(rs, dict):
            continue
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        for ss in _get(rs, "scopeSpans", "scope_spans") or []:
            if not isinstance(ss, dict):
                continue
            for span in ss.get("spans") or []:
                if isinstance(span, dict):
                    yield resource, span


def map_request(doc: Mapping[str, Any]) -> Mapped:
    """Map every span of a decoded request; validate each event against the schema."""
    out = Mapped()
    for index, (resource, span) in enumerate(iter_spans(doc)):
        try:
            result = map_span(span, resource)
        except ValueError as exc:
            out.invalid.append(InvalidSpan(index, str(exc)[:500], {"span": _span_ref(span)}))
            continue
        if isinstance(result, Skip):
            out.skipped[result.reason] += 1
            continue
        try:
            TraceEvent.model_validate(result)
        except ValidationError as exc:
            reason, detail = classify_error(exc)
            out.invalid.append(InvalidSpan(index, detail, result,
                                           INVALID_ID if reason == INVALID_ID else INVALID_SPAN_REASON))
            continue
        out.events.append(result)
    return out


def _span_ref(span: Mapping[str, Any]) -> dict[str, Any]:
    return {k: span.get(k) for k in ("traceId", "spanId", "name") if isinstance(span.get(k), str)}


def _nanos(span: Mapping[str, Any], camel: str, snake: str) -> int:
    raw = _get(span, camel, snake)
    try:
        return int(raw) if raw is not None and not isinstance(raw, bool) else 0
    except (TypeError, ValueError):
        raise ValueError(f"{camel} is not an integer: {str(raw)[:40]!r}") from None


def _is_error(span: Mapping[str, Any]) -> bool:
    status = span.get("status")
    if not isinstance(status, dict):
        return False
    return status_is_error(status.get("code"))


def status_is_error(code: Any) -> bool:
    """Is an OTLP span status code (number, enum name, or the SDK's ``StatusCode`` name) ERROR?"""
    return code in _STATUS_ERROR or (isinstance(code, str) and code.upper() in _STATUS_ERROR)


def _exception_type(span: Mapping[str, Any]) -> str | None:
    """``exception.type`` of the span's first ``exception`` event (the class name, never the message)."""
    for event in span.get("events") or ():
        if isinstance(event, dict) and event.get("name") == "exception":
            kind = attributes(event.get("attributes")).get("exception.type")
            return kind if isinstance(kind, str) and kind else None
    return None


def map_span(span: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, Any] | Skip:
    """One span as a schema-v1 event dict, or :class:`Skip`; ValueError when the span is malformed.

    Span attributes win over resource attributes; a ``tripwire.<field>`` attribute
    (span or resource) sets a schema field directly and wins over the mapped value;
    ``tripwire.kind`` maps a span of any convention, or none (e.g. ``refusal``).
    """
    error = _is_error(span)
    return map_parts(
        attributes(span.get("attributes")), resource,
        name=span.get("name") if isinstance(span.get("name"), str) else "",
        trace_id=_get(span, "traceId", "trace_id"), span_id=_get(span, "spanId", "span_id"),
        start_ns=_nanos(span, "startTimeUnixNano", "start_time_unix_nano"),
        end_ns=_nanos(span, "endTimeUnixNano", "end_time_unix_nano"),
        error=error, exception_type=_exception_type(span) if error else None)


def map_parts(attrs: Mapping[str, Any], resource: Mapping[str, Any], *, name: str, trace_id: Any, span_id: Any,
              start_ns: int, end_ns: int, error: bool, exception_type: str | None = None) -> dict[str, Any] | Skip:
    """:func:`map_span` on a span already taken apart (the OpenTelemetry SDK's ``ReadableSpan`` path).

    ``attrs`` / ``resource`` are plain attribute dicts, ``trace_id`` / ``span_id`` hex
    strings, ``error`` whether the span status is ERROR.
    """
    merged = {**resource, **attrs}
    forced = merged.get("tripwire.kind")
    ev: dict[str, Any] = {}
    if isinstance(forced, str) and forced:
        kind, convention = forced, TRIPWIRE
    else:
        classified = classify(merged)
        if isinstance(classified, Skip):
            return classified
        role, convention = classified
        if role == "guardrail":
            verdict = guardrail_verdict(merged, convention, error, name)
            if isinstance(verdict, Skip):
                return verdict
            kind, ev = "monitor_flag", verdict
        elif role == "agent":
            if first(merged, "tripwire.outcome") is None:
                return Skip("no_outcome")
            kind = "task_outcome"
        else:
            kind = role

    agent = first(merged, *AGENT_KEYS)
    if agent is None:
        return Skip("no_agent")
    if not (isinstance(trace_id, str) and trace_id and isinstance(span_id, str) and span_id):
        raise ValueError("span has no traceId/spanId")
    when = end_ns or start_ns
    if when <= 0:
        raise ValueError("span has neither startTimeUnixNano nor endTimeUnixNano")

    ev = {"schema_version": "1", "event_id": f"{trace_id.lower()}:{span_id.lower()}",
          "ts": when // 1_000_000, "agent_id": str(agent), "kind": kind, **ev}
    if start_ns and end_ns and end_ns >= start_ns:
        ev["latency_ms"] = (end_ns - start_ns) / 1e6
    _put(ev, "tenant", first(merged, *TENANT_KEYS))
    _put(ev, "session_id", first(merged, *SESSION_KEYS))
    _put(ev, "task_id", first(merged, *TASK_KEYS))
    _put(ev, "tool", first(merged, *TOOL_KEYS))
    _put(ev, "tool_call_id", first(merged, *TOOL_CALL_ID_KEYS))
    _put(ev, "model", first(merged, *MODEL_KEYS))
    _put(ev, "input_tokens", first(merged, *INPUT_TOKEN_KEYS))
    _put(ev, "output_tokens", first(merged, *OUTPUT_TOKEN_KEYS))
    _put(ev, "cost_usd", first(merged, *COST_KEYS))
    error_type = first(merged, "error.type")
    if error_type is None and error:
        error_type = exception_type
    _put(ev, "error_type", error_type)
    if kind in ("tool_call", "llm_call"):
        ev["status"] = "error" if error or error_type is not None else "ok"
    for key, value in merged.items():
        if key.startswith("tripwire.") and value is not None:
            fieldname = key[len("tripwire."):]
            if fieldname in OVERRIDABLE:
                ev[fieldname] = value
    if ev["kind"] == "tool_call" and ev.get("tool") is None:
        tool = merged.get("traceloop.entity.name") if convention == OPENLLMETRY else None
        tool = tool if isinstance(tool, str) and tool else tool_from_span_name(name, convention)
        if not tool:
            return Skip("no_tool")
        ev["tool"] = tool
    extra = {"otel.span_name": name[:256] if name else None,
             "gen_ai.provider.name": first(merged, *PROVIDER_KEYS),
             "gen_ai.operation.name": _lower(merged.get(OPERATION_KEY)),
             "otel.convention": convention}
    for key in NAME_ATTRIBUTES:
        value = merged.get(key)
        if isinstance(value, str):
            extra[key] = value[:256]
    ev["attributes"] = {k: v for k, v in extra.items() if v is not None}
    return ev


def _lower(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) else None


def _put(ev: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        ev[key] = value
