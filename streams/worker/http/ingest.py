"""HTTP ingest: ``POST /v1/traces`` for producers that cannot speak Kafka.

Body: JSON lines (``Content-Type: application/x-ndjson``, ``application/jsonl``
or ``text/plain``; one event object per line, blank lines ignored) or JSON
(``application/json``: one event object or an array of them). At most
:data:`MAX_BODY_BYTES` (413 past it) and :data:`MAX_EVENTS` events.

Each event is validated on its own with the worker's own decoder (same reasons as
``tripwire_events_rejected_total``, including ``ts_future``: dated more than
``max_future_skew_s`` past the wall clock); the valid ones are produced to agent-traces,
grouped per agent into batched messages keyed by agent id, and the reply waits
for the broker's acknowledgement. The worker that consumes them validates again.
These messages are **unsigned**: the worker never signs on behalf of a producer, so
their events are unattested, and refused (``bad_signature``) at consume time where
``require_signature`` covers them.

**Signed requests (end to end).** With headers ``X-Tripwire-Signature: v1=<hex
HMAC-SHA256 of the exact body>`` and ``X-Tripwire-Key-Id: <id>`` (the Kafka scheme of
:mod:`streams.contract.signing`), the body must be ``application/json``: one event or a
JSON array of events of ONE agent, at most ``max_message_bytes``. It is forwarded
verbatim as one agent-traces message keyed by that agent with the Kafka signature
headers, so the consuming worker verifies it like any Kafka message (key binding, replay
window, drill key). This worker checks it first and answers 400 for a bad signature, a
multi-agent or too large body (nothing forwarded); events it would refuse are listed
(207) but the body is still forwarded whole (a signature covers all of it; the consuming
worker dead-letters those events).

Reply ``{"accepted": n, "rejected": [{"line": i, "reason": r, "detail": d}]}`` where
``line`` is the 1-based line number (JSON lines) or the 1-based position of the
element (JSON array), ``null`` for the whole body. Status: **200** all accepted,
**207** some accepted and some rejected, **400** none accepted. 401 without a valid
token, 403 for a token without ingest rights, 413 too large, 415 unsupported
content type, 503 when the broker did not acknowledge in time (retrying is safe:
``event_id`` dedupes).

**OTLP/HTTP at the same path.** A body that is an OTLP ``ExportTraceServiceRequest``
(``application/x-protobuf``, or ``application/json`` with ``resourceSpans``; optionally
``Content-Encoding: gzip``) is what every OpenTelemetry SDK and Collector ``otlphttp``
exporter posts here: its spans are mapped as those of ``otlp_spans``
(:mod:`streams.contract.otlp_http`) and the reply is OTLP's (200 with ``partialSuccess``
counting refused spans, 400 with a ``google.rpc.Status``), with the same token and limits.

Auth: ``Authorization: Bearer <token>`` of an ``ingest_tokens`` entry (agents and
collectors get these: they cannot touch breakers) or of an operator/admin
operator. With no token configured at all, HTTP ingest is disabled (401).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, Metric

from breakers.operators import OperatorRegistry, Role
from streams.contract.decode import MAX_BATCH_EVENTS, TS_FUTURE, decode_message, ts_future_problem
from streams.contract.otlp import OtlpError
from streams.contract.otlp_http import decompress, export_traces, is_otlp
from streams.contract.signing import (DEFAULT_DRILL_PREFIX, HTTP_KEY_ID_HEADER, HTTP_SIGNATURE_HEADER, KEY_ID_HEADER,
                                      SIGNATURE_HEADER, SignaturePolicy)
from streams.settings import Settings
from streams.worker.context import AppContext
from streams.worker.http.api import Reply
from streams.worker.otlp_bridge import Outgoing, trace_messages

log = logging.getLogger("tripwire.ingest")

MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS = MAX_BATCH_EVENTS
ACK_TIMEOUT_S = 10.0
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-lines",
                          "application/x-jsonlines", "text/plain", ""})
JSON_TYPES = frozenset({"application/json"})

Rejected = dict[str, Any]


def _rejected(line: int | None, reason: str, detail: str) -> Rejected:
    return {"line": line, "reason": reason, "detail": detail}


def _problem(line: int, obj: Any, raw: bytes, max_event_bytes: int, max_future_skew_s: float | None = None,
             now: float | None = None) -> Rejected | None:
    """Why the worker would reject the event ``obj`` (encoded ``raw``) of ``line``; None if it accepts it."""
    if not isinstance(obj, dict):
        return _rejected(line, "not_object", f"expected a JSON object, got {type(obj).__name__}")
    good, bad = decode_message(None, raw, max_bytes=max_event_bytes)
    if bad:
        return _rejected(line, bad[0].reason, bad[0].detail)
    if max_future_skew_s is not None and good:
        future = ts_future_problem(good[0].ts, time.time() if now is None else now, max_future_skew_s)
        if future is not None:
            return _rejected(line, TS_FUTURE, future)
    return None


def parse_body(body: bytes, content_type: str, *, max_event_bytes: int, max_future_skew_s: float | None = None,
               now: float | None = None) -> tuple[list[dict[str, Any]], list[Rejected]]:
    """(events the worker would accept, rejections) of a request body; ValueError for a bad content type.

    ``max_future_skew_s`` (None: not checked) refuses events dated that far past ``now`` (default: the wall
    clock) as ``ts_future``, as the consuming worker would.

    >>> ok, bad = parse_body(b'{"schema_version":"1","event_id":"e1","ts":0,"agent_id":"a","kind":"refusal"}\\n'
    ...                      b'{"kind":"nope"}\\n'
    ...                      b'{"schema_version":"1","event_id":"e3","ts":2000000,"agent_id":"a","kind":"refusal"}\\n',
    ...                      "application/x-ndjson", max_event_bytes=4096, max_future_skew_s=300, now=1000.0)
    >>> [e["event_id"] for e in ok], [(r["line"], r["reason"]) for r in bad]
    (['e1'], [(2, 'schema'), (3, 'ts_future')])
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    events: list[dict[str, Any]] = []
    rejected: list[Rejected] = []

    def take(line: int, obj: Any, raw: bytes) -> None:
        problem = _problem(line, obj, raw, max_event_bytes, max_future_skew_s, now)
        if problem is None:
            events.append(obj)
        else:
            rejected.append(problem)

    if mime in JSON_TYPES:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return [], [_rejected(None, "invalid_json", str(exc)[:300])]
        items = doc if isinstance(doc, list) else [doc]
        if len(items) > MAX_EVENTS:
            return [], [_rejected(None, "batch_too_large", f"{len(items)} events, limit {MAX_EVENTS}")]
        for i, obj in enumerate(items, start=1):
            take(i, obj, orjson.dumps(obj) if isinstance(obj, dict) else b"")
    elif mime in NDJSON_TYPES:
        lines = body.split(b"\n")
        if sum(1 for raw in lines if raw.strip()) > MAX_EVENTS:
            return [], [_rejected(None, "batch_too_large", f"more than {MAX_EVENTS} lines")]
        for i, raw in enumerate(lines, start=1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                text = str(exc)
                reason = "invalid_utf8" if "utf-8" in text.lower() else "invalid_json"
                rejected.append(_rejected(i, reason, text[:300]))
                continue
            take(i, obj, raw)
    else:
        raise ValueError(f"unsupported Content-Type {mime!r}: use application/x-ndjson, text/plain or "
                         "application/json")
    if not events and not rejected:
        rejected.append(_rejected(None, "empty", "the body holds no event"))
    return events, rejected


class IngestStats:
    """Counters of POST /v1/traces, exported on scrape."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.events: Counter[str] = Counter({"accepted": 0, "rejected": 0})

    def families(self) -> Iterable[Metric]:
        req = CounterMetricFamily("tripwire_http_ingest_requests", "POST /v1/traces requests by HTTP status.",
                                  labels=["status"])
        for status, n in sorted(self.requests.items()):
            req.add_metric([status], n)
        ev = CounterMetricFamily("tripwire_http_ingest_events", "Events posted to /v1/traces, by result.",
                                 labels=["result"])
        for result, n in self.events.items():
            ev.add_metric([result], n)
        return [req, ev]


Send = Callable[[Outgoing], Awaitable[Any]]


class TraceIngest:
    """The logic of POST /v1/traces, free of the web framework."""

    def __init__(self, settings: Settings, operators: OperatorRegistry, send: Send, *,
                 drill_prefix: str = DEFAULT_DRILL_PREFIX) -> None:
        self.settings = settings
        self.signing = SignaturePolicy.of(settings, drill_prefix)
        self.operators = operators
        self.ingesters = OperatorRegistry.from_config(
            [{"name": e.get("name"), "role": "viewer", "token_sha256": e.get("token_sha256", "")}
             for e in settings.ingest_tokens])
        self.send = send
        self.stats = IngestStats()

    def authorized(self, authorization: str | None) -> Reply | None:
        """None when the bearer token may ingest, else the 401/403 reply."""
        if not len(self.ingesters) and not len(self.operators):
            return Reply(401, {"error": "HTTP ingest is disabled: configure ingest_tokens (or an operator token)"},
                         {"WWW-Authenticate": "Bearer"})
        if self.ingesters.authenticate(authorization) is not None:
            return None
        op = self.operators.authenticate(authorization)
        if op is None:
            return Reply(401, {"error": "unauthorized: bearer token required"}, {"WWW-Authenticate": "Bearer"})
        if op.role < Role.operator:
            log.info("ingest refused for %s (role %s)", op.name, op.role.name)
            return Reply(403, {"error": "forbidden: ingest needs an ingest token or an operator/admin token"})
        return None

    async def handle(self, authorization: str | None, content_type: str, content_length: int | None,
                     read: Callable[[int], Awaitable[bytes | None]], content_encoding: str | None = None,
                     signature: str | None = None, key_id: str | None = None) -> Reply:
        """Authenticate, read at most MAX_BODY_BYTES via ``read(limit)`` (None = too large), validate, forward.

        ``signature`` / ``key_id``: the ``X-Tripwire-Signature`` / ``X-Tripwire-Key-Id`` headers (signed path).
        """
        reply = await self._handle(authorization, content_type, content_length, read, content_encoding,
                                   signature, key_id)
        self.stats.requests[str(reply.status)] += 1
        return reply

    async def _forward(self, events: list[dict[str, Any]]) -> Exception | None:
        """Produce ``events`` to the trace topic and wait for the acks; the error, if any."""
        try:
            await asyncio.wait_for(asyncio.gather(*(self.send(m) for m in trace_messages(events, self.settings))),
                                   ACK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - timeout or producer error: the client may retry
            log.warning("ingest: forwarding %d events failed: %s", len(events), exc)
            return exc
        self.stats.events["accepted"] += len(events)
        return None

    async def _signed(self, body: bytes, content_type: str, signature: str | None, key_id: str | None) -> Reply:
        """A signed request: checked like the consuming worker will, then forwarded verbatim as one message."""
        mime = content_type.split(";", 1)[0].strip().lower()
        if mime not in JSON_TYPES:
            return Reply(415, {"error": f"a signed body must be application/json (one event or an array of events "
                                        f"of one agent), got {mime!r}"})

        def bad(reason: str, detail: str) -> Reply:
            self.stats.events["rejected"] += 1
            return Reply(400, {"accepted": 0, "rejected": [_rejected(None, reason, detail)]})

        if not signature or not key_id:
            return bad("bad_signature", "a signed request needs both X-Tripwire-Signature and X-Tripwire-Key-Id")
        limit = self.settings.max_message_bytes
        if len(body) > limit:
            return bad("too_large", f"a signed body is forwarded as one message: {len(body)} bytes, limit {limit}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return bad("invalid_json", str(exc)[:300])
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            return bad("empty", "the body holds no event")
        if len(items) > MAX_EVENTS:
            return bad("batch_too_large", f"{len(items)} events, limit {MAX_EVENTS}")
        agents = {obj.get("agent_id") if isinstance(obj, dict) else None for obj in items}
        agent = next(iter(agents))
        if len(agents) != 1 or not isinstance(agent, str) or not agent:
            return bad("key_mismatch", f"a signed body holds the events of ONE agent (found {len(agents)} agent "
                                       "ids, or an element without a string agent_id)")
        key = agent.encode("utf-8")
        headers = {SIGNATURE_HEADER: signature.strip().encode("utf-8", "replace"),
                   KEY_ID_HEADER: key_id.strip().encode("utf-8", "replace")}
        verified: str | None = None
        if self.signing is not None:
            verified, problem = self.signing.seal(key, body, list(headers.items()))
            if problem is not None:
                return bad("bad_signature", problem)
        good, rejects = decode_message(key, body, max_bytes=limit)
        rejected = [_rejected(None if r.index is None else r.index + 1, r.reason, r.detail) for r in rejects]
        lines = {obj.get("event_id"): i for i, obj in reversed(list(enumerate(items, start=1)))
                 if isinstance(obj, dict)}
        now, accepted = time.time(), 0
        for ev in good:
            problem = self.signing.event_problem(verified, ev.agent_id, ev.tenant) if self.signing else None
            reason = "bad_signature"
            if problem is None:
                problem, reason = ts_future_problem(ev.ts, now, self.settings.max_future_skew_s), TS_FUTURE
            if problem is None:
                accepted += 1
            else:
                rejected.append(_rejected(lines.get(ev.event_id), reason, problem))
        self.stats.events["rejected"] += len(rejected)
        if not accepted:
            return Reply(400, {"accepted": 0, "rejected": rejected})
        try:
            await asyncio.wait_for(self.send(Outgoing(key, body, headers, len(items))), ACK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - timeout or producer error: the client may retry
            log.warning("ingest: forwarding a signed message of %d events failed: %s", len(items), exc)
            return Reply(503, {"error": f"the broker did not acknowledge the events: {type(exc).__name__}",
                               "accepted": 0, "rejected": rejected}, {"Retry-After": "1"})
        self.stats.events["accepted"] += accepted
        return Reply(200 if not rejected else 207, {"accepted": accepted, "rejected": rejected})

    async def _otlp(self, body: bytes, content_type: str) -> Reply:
        """An OTLP/HTTP export (already decompressed): map its spans, forward the events, answer as OTLP does."""
        otlp = export_traces(body, content_type, max_bytes=MAX_BODY_BYTES)
        if otlp.mapped is None:
            return Reply(otlp.status, otlp.body, content_type=otlp.content_type)
        self.stats.events["rejected"] += len(otlp.mapped.invalid)
        if otlp.mapped.events:
            error = await self._forward(otlp.mapped.events)
            if error is not None:
                return Reply(503, {"error": f"the broker did not acknowledge the events: {type(error).__name__}"},
                             {"Retry-After": "1"})
        return Reply(200, otlp.body, content_type=otlp.content_type)

    async def _handle(self, authorization: str | None, content_type: str, content_length: int | None,
                      read: Callable[[int], Awaitable[bytes | None]], content_encoding: str | None = None,
                      signature: str | None = None, key_id: str | None = None) -> Reply:
        denied = self.authorized(authorization)
        if denied is not None:
            return denied
        too_large = Reply(413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"})
        if content_length is not None and content_length > MAX_BODY_BYTES:
            return too_large
        body = await read(MAX_BODY_BYTES)
        if body is None:
            return too_large
        try:  # gzip / deflate bodies (OTLP exporters compress by default), bounded after decoding too
            body = decompress(body, content_encoding, MAX_BODY_BYTES)
        except OtlpError as exc:
            return too_large if exc.reason == "otlp_too_large" else Reply(400, {"error": exc.detail})
        if signature is not None or key_id is not None:
            return await self._signed(body, content_type, signature, key_id)
        if is_otlp(body, content_type):
            return await self._otlp(body, content_type)
        try:
            events, rejected = parse_body(body, content_type, max_event_bytes=self.settings.max_message_bytes,
                                          max_future_skew_s=self.settings.max_future_skew_s)
        except ValueError as exc:
            return Reply(415, {"error": str(exc)})
        self.stats.events["rejected"] += len(rejected)
        if events:
            error = await self._forward(events)
            if error is not None:
                return Reply(503, {"error": f"the broker did not acknowledge the events: {type(error).__name__}",
                                   "accepted": 0, "rejected": rejected}, {"Retry-After": "1"})
        status = 200 if not rejected else 207 if events else 400
        return Reply(status, {"accepted": len(events), "rejected": rejected})


def register(ctx: AppContext) -> None:
    """Add ``POST /v1/traces`` to the worker."""
    from faust.web import Request, Response, View

    traces = ctx.traces_topic

    async def send(m: Outgoing) -> Any:
        fut = await traces.send(key=m.key, value=m.value, headers=m.headers or None)
        return await fut

    ingest = TraceIngest(ctx.settings, ctx.api.operators, send, drill_prefix=ctx.monitor.policy.drill_prefix)
    ctx.metrics.add_source(ingest.stats.families)

    @ctx.app.page("/v1/traces")
    class Traces(View):
        async def post(self, request: Request) -> Response:
            async def read(limit: int) -> bytes | None:
                buf = bytearray()
                stream = request.content  # type: ignore[attr-defined]
                while True:
                    chunk = await stream.read(64 * 1024)
                    if not chunk:
                        return bytes(buf)
                    buf += chunk
                    if len(buf) > limit:
                        return None

            length = request.headers.get("Content-Length")
            reply = await ingest.handle(request.headers.get("Authorization"),
                                        request.headers.get("Content-Type", ""),
                                        int(length) if length and length.isdigit() else None, read,
                                        signature=request.headers.get(HTTP_SIGNATURE_HEADER),
                                        key_id=request.headers.get(HTTP_KEY_ID_HEADER))
            # no Content-Encoding passed on: aiohttp already inflated a gzip/deflate body as ``read`` streams it
            # (and ``read`` bounds the inflated size)
            if reply.content_type is not None:  # OTLP: protobuf or JSON bytes, as the exporter sent
                return self.bytes(reply.body, content_type=reply.content_type, status=reply.status,
                                  headers=reply.headers)
            return self.json(reply.body, status=reply.status, headers=reply.headers)
