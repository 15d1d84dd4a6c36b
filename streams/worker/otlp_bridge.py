"""OTLP in: a worker agent that turns OpenTelemetry GenAI spans into trace events.

Data flow::

    otlp_spans ─► otlp agent ─► streams.contract.otlp (decode + map + validate)
                              ├► agent-traces   (events grouped per agent, key = agent id, batched)
                              └► agent-traces-dlq (undecodable messages, spans the schema refuses)

Mapped events are *produced to agent-traces* rather than handed to the monitor
directly, so they land on their agent's partition (the worker that owns the agent's
detectors may be another one) and take the same path as every other event:
validation, signature check, dedupe (``event_id`` = traceId:spanId makes a
re-delivered export a duplicate), counting. faust flushes the producer before it
commits the otlp offset, so delivery is at-least-once.

Re-published messages are **unsigned**: the worker never signs on behalf of a producer
(anyone who can write ``otlp_spans`` or hold an ingest token would otherwise mint
attested traffic). Their events are unattested, and are refused as ``bad_signature``
at consume time for agents/tenants under ``require_signature``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, Metric

from streams.contract.decode import Reject
from streams.contract.dlq import dlq_record
from streams.contract.otlp import (
    INVALID_SPAN_REASON,
    MESSAGE_REJECT_REASONS,
    SKIP_REASONS,
    OtlpError,
    decode_request,
    map_request,
    proto_supported,
)
from streams.emitter.client import pack_messages
from streams.settings import Settings
from streams.worker.context import AppContext

log = logging.getLogger("tripwire.otlp")

#: events per re-published agent-traces message
FORWARD_BATCH_EVENTS = 500
SPAN_RESULTS = ("mapped", "skipped", "invalid")


@dataclass(slots=True)
class Outgoing:
    """A Kafka message to produce (to agent-traces, or a dead letter to the DLQ)."""

    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    events: int = 0


class OtlpStats:
    """Counters of the OTLP path, exported on scrape."""

    def __init__(self) -> None:
        self.spans: Counter[str] = Counter({r: 0 for r in SPAN_RESULTS})
        self.skipped: Counter[str] = Counter({r: 0 for r in SKIP_REASONS})
        self.messages: Counter[str] = Counter({"ok": 0, "rejected": 0})

    def families(self) -> Iterable[Metric]:
        spans = CounterMetricFamily("tripwire_otlp_spans", "OTLP spans read, by result: mapped to a trace "
                                    "event, skipped (carries no event), invalid (dead-lettered).", labels=["result"])
        for result, n in self.spans.items():
            spans.add_metric([result], n)
        skipped = CounterMetricFamily("tripwire_otlp_spans_skipped", "OTLP spans skipped, by reason.",
                                      labels=["reason"])
        for reason, n in self.skipped.items():
            skipped.add_metric([reason], n)
        messages = CounterMetricFamily("tripwire_otlp_messages", "OTLP messages consumed, by result "
                                       "(rejected = dead-lettered whole).", labels=["result"])
        for result, n in self.messages.items():
            messages.add_metric([result], n)
        return [spans, skipped, messages]


def trace_messages(events: list[dict[str, Any]], settings: Settings) -> list[Outgoing]:
    """agent-traces messages for ``events``: grouped per agent, batched, unsigned (never signed by the worker)."""
    max_bytes = max(1024, settings.max_message_bytes - 1024)
    return [Outgoing(key, value, {}, n)
            for key, value, n in pack_messages(events, max_events=FORWARD_BATCH_EVENTS, max_bytes=max_bytes)]


class OtlpTranslator:
    """One OTLP message in -> agent-traces messages and dead letters out. No I/O."""

    def __init__(self, settings: Settings, stats: OtlpStats | None = None) -> None:
        self.settings = settings
        self.stats = stats or OtlpStats()

    def translate(self, key: bytes | None, value: bytes | None, *, topic: str, partition: int,
                  offset: int) -> tuple[list[Outgoing], list[Outgoing]]:
        """(agent-traces messages, DLQ messages) for one consumed OTLP message."""
        stats = self.stats

        def dead(reject: Reject) -> Outgoing:
            record = dlq_record(reject, topic=topic, partition=partition, offset=offset, key=key, value=value,
                                payload_limit=self.settings.dlq_payload_bytes)
            return Outgoing(key, record, {"tripwire-reason": reject.reason.encode()})

        try:
            doc = decode_request(value)
        except OtlpError as exc:
            stats.messages["rejected"] += 1
            return [], [dead(Reject(exc.reason, exc.detail))]
        mapped = map_request(doc)
        stats.messages["ok"] += 1
        stats.spans["mapped"] += len(mapped.events)
        stats.spans["skipped"] += sum(mapped.skipped.values())
        stats.spans["invalid"] += len(mapped.invalid)
        stats.skipped.update(mapped.skipped)
        letters = [dead(Reject(bad.reason, bad.detail, bad.index, orjson.dumps(bad.event)))
                   for bad in mapped.invalid]
        return trace_messages(mapped.events, self.settings), letters


def register(ctx: AppContext) -> None:
    """Add the ``otlp`` agent (topic ``settings.topics.otlp``) and its metrics to the worker."""
    settings = ctx.settings
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    otlp_topic = ctx.app.topic(settings.topics.otlp, allow_empty=True, partitions=settings.partitions, **raw)
    dlq = ctx.app.topic(settings.topics.dlq, partitions=settings.partitions, **raw)
    translator = OtlpTranslator(settings)
    ctx.metrics.add_source(translator.stats.families)
    rejected = ctx.pipeline.counters.rejected  # tripwire_events_rejected_total{reason}: every DLQ write
    for reason in (*MESSAGE_REJECT_REASONS, INVALID_SPAN_REASON):
        rejected.setdefault(reason, 0)
    traces, topic_name = ctx.traces_topic, settings.topics.otlp

    @ctx.app.agent(otlp_topic, name="otlp")
    async def otlp(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            out, letters = translator.translate(msg.key, msg.value, topic=topic_name, partition=msg.partition,
                                                offset=msg.offset)
            for m in out:
                await traces.send(key=m.key, value=m.value, headers=m.headers or None)
            for m in letters:
                rejected[m.headers["tripwire-reason"].decode()] += 1
                await dlq.send(key=m.key, value=m.value, headers=m.headers)

    log.info("OTLP ingest: consuming %s (otlp_json%s)", topic_name,
             ", otlp_proto" if proto_supported() else "; otlp_proto needs the opentelemetry-proto package")
