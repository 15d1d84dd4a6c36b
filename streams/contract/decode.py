"""Turn one Kafka message into accepted trace events and per-event rejects.

A message holds one event object or a JSON array of events of the key's agent.
Each element is accepted or rejected on its own, so one bad event never costs
the good ones around it. Rejects carry a bounded ``reason`` (a metric label) and
a human-readable ``detail``.

>>> good, bad = decode_message(b"a", b'[{"schema_version":"1","event_id":"1","ts":0,'
...     b'"agent_id":"a","kind":"refusal"}, 42]', max_bytes=1024)
>>> [e.event_id for e in good], [(r.reason, r.index) for r in bad]
(['1'], [('not_object', 1)])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from streams.contract.schema import INVALID_ID, TraceEvent, fast_event

#: every reason a message or event can be rejected for (the metric's label values)
REJECT_REASONS: tuple[str, ...] = (
    "empty",
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "not_object",
    "schema",
    "invalid_id",
    "unsupported_schema_version",
    "unknown_kind",
    "future_timestamp",
    "ts_future",
    "key_mismatch",
    "bad_signature",
    "replayed",
    "batch_too_large",
    "internal_error",
)
MAX_BATCH_EVENTS = 10_000
#: an event dated more than ``max_future_skew_s`` past the worker's wall clock (``future_timestamp`` is the
#: schema's own, coarser limit of a day)
TS_FUTURE = "ts_future"
#: an event of a signed message older than its partition's signed watermark minus ``signature_max_age_s``
REPLAYED = "replayed"


def ts_future_problem(ts: float, now: float, max_skew_s: float) -> str | None:
    """The reject detail of an event dated ``ts`` when the wall clock reads ``now``; None if it is not too far ahead.

    Never clamped: a clamped event would still move clocks and windows to where its sender chose.

    >>> ts_future_problem(1300.0, 1000.0, 300.0) is None, ts_future_problem(1301.0, 1000.0, 300.0)
    (True, 'ts is 301 s past the wall clock (max_future_skew_s 300)')
    """
    ahead = ts - now
    if ahead <= max_skew_s:
        return None
    return f"ts is {ahead:.0f} s past the wall clock (max_future_skew_s {max_skew_s:g})"


@dataclass(slots=True)
class Reject:
    """Why a message (``index`` None) or one event of a batch (``index`` i) was refused."""

    reason: str
    detail: str
    index: int | None = None
    element: bytes | None = None  # the offending batch element, re-serialised


def classify(exc: ValidationError) -> tuple[str, str]:
    """Map a pydantic error to a bounded reason and a short detail."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "event"
    msg = first["msg"]
    field = first["loc"][0] if first["loc"] else None
    if field == "schema_version" and first["type"] != "missing":
        reason = "unsupported_schema_version"
    elif field == "kind" and first["type"] == "literal_error":
        reason = "unknown_kind"
    elif field == "ts" and "future_timestamp" in msg:
        reason = "future_timestamp"
    elif any(e["type"] == INVALID_ID for e in errors):
        reason = INVALID_ID
    else:
        reason = "schema"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return reason, f"{loc}: {msg}{more}"[:500]


def _validate(obj: object, key: str | None, index: int | None) -> TraceEvent | Reject:
    if not isinstance(obj, dict):
        return Reject("not_object", f"expected a JSON object, got {type(obj).__name__}", index, _dump(obj))
    try:  # the common well-formed shape without pydantic (the same event); anything else: pydantic decides
        event = fast_event(obj) or TraceEvent.model_validate(obj)
    except ValidationError as exc:
        reason, detail = classify(exc)
        return Reject(reason, detail, index, _dump(obj) if index is not None else None)
    if key is not None and event.agent_id != key:
        return Reject(
            "key_mismatch",
            f"agent_id {event.agent_id[:64]!r} differs from the message key {key[:64]!r}",
            index,
            _dump(obj) if index is not None else None,
        )
    return event


def _dump(obj: object) -> bytes | None:
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return None


def decode_message(
    key: bytes | None,
    value: bytes | None,
    *,
    max_bytes: int,
    verify: Callable[[bytes], str | None] | None = None,
) -> tuple[list[TraceEvent], list[Reject]]:
    """Decode and validate one message: (accepted events, rejects).

    ``verify`` checks the message's signature and returns a reject detail or None.
    """
    if not value:
        return [], [Reject("empty", "message value is empty or null")]
    if len(value) > max_bytes:
        return [], [Reject("too_large", f"message is {len(value)} bytes, limit {max_bytes}")]
    if verify is not None:
        problem = verify(value)
        if problem is not None:
            return [], [Reject("bad_signature", problem)]
    key_text: str | None = None
    if key:
        try:
            key_text = key.decode("utf-8")
        except UnicodeDecodeError:
            return [], [Reject("invalid_utf8", "message key is not valid UTF-8")]
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        reason = "invalid_utf8" if "utf-8" in text.lower() or "surrogate" in text.lower() else "invalid_json"
        return [], [Reject(reason, text[:300])]
    if isinstance(doc, dict):
        result = _validate(doc, key_text, None)
        if isinstance(result, Reject):
            return [], [result]
        return [result], []
    if isinstance(doc, list):
        if not doc:
            return [], [Reject("empty", "batch is an empty JSON array")]
        if len(doc) > MAX_BATCH_EVENTS:
            return [], [Reject("batch_too_large", f"batch has {len(doc)} events, limit {MAX_BATCH_EVENTS}")]
        good: list[TraceEvent] = []
        bad: list[Reject] = []
        for i, obj in enumerate(doc):
            result = _validate(obj, key_text, i)
            if isinstance(result, Reject):
                bad.append(result)
            else:
                good.append(result)
        return good, bad
    return [], [Reject("not_object", f"expected a JSON object or array, got {type(doc).__name__}")]
