"""An OpenTelemetry ``SpanProcessor`` that turns finished spans into trace events (pydantic-ai, OpenInference, ...).

Needs ``opentelemetry-sdk`` (``pip install 'tripwire[otel]'``). Every finished span
goes through the same mapping as the ``otlp_spans`` topic
(:func:`streams.contract.otlp.map_parts`: OTel GenAI, OpenInference and OpenLLMetry
spans); spans that map become events emitted through the :class:`~streams.emitter.Emitter`
(batching, signing, bounded buffer), the others are counted in :attr:`skipped`::

    from opentelemetry.sdk.trace import TracerProvider
    from streams.emitter import Emitter
    from streams.emitter.otel import TripwireSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(TripwireSpanProcessor(Emitter("kafka-1:9092", agent_id="billing-agent")))
    # pydantic-ai: Agent(..., instrument=InstrumentationSettings(tracer_provider=provider))

The emitter's ``agent_id`` stands in for the resource's ``service.name``; a span's own
``gen_ai.agent.id`` / ``gen_ai.agent.name`` / ``agent.name`` still wins.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

from streams.contract.otlp import Skip, map_parts
from streams.emitter.client import Emitter, InvalidEvent


def span_event(span: ReadableSpan, agent_id: str | None = None) -> dict[str, Any] | Skip:
    """A finished SDK span as a trace event dict (or Skip); ``agent_id`` overrides ``service.name``."""
    ctx = span.get_span_context()
    resource = dict(span.resource.attributes) if span.resource is not None else {}
    if agent_id is not None:
        resource["service.name"] = agent_id
    error = span.status.status_code is StatusCode.ERROR
    exception_type = None
    if error:
        for event in span.events:
            if event.name == "exception" and event.attributes:
                kind = event.attributes.get("exception.type")
                exception_type = kind if isinstance(kind, str) else None
                break
    return map_parts(dict(span.attributes or {}), resource, name=span.name or "",
                     trace_id=format(ctx.trace_id, "032x") if ctx else None,
                     span_id=format(ctx.span_id, "016x") if ctx else None,
                     start_ns=span.start_time or 0, end_ns=span.end_time or 0,
                     error=error, exception_type=exception_type)


class TripwireSpanProcessor(SpanProcessor):
    """Emit a trace event for every finished span that carries one; never raises into the traced code."""

    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter
        #: spans that carried no event, by reason (``not_genai``, ``no_outcome``, ...)
        self.skipped: Counter[str] = Counter()
        #: spans that mapped to an event the schema refuses
        self.invalid = 0

    def on_end(self, span: ReadableSpan) -> None:
        try:
            ev = span_event(span, self.emitter.agent_id)
        except ValueError:
            self.invalid += 1
            return
        if isinstance(ev, Skip):
            self.skipped[ev.reason] += 1
            return
        kind = ev.pop("kind")
        ev.pop("schema_version", None)
        try:
            self.emitter.emit(kind, **ev)
        except InvalidEvent:
            self.invalid += 1

    def shutdown(self) -> None:
        self.emitter.flush()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.emitter.flush(timeout_millis / 1000)
