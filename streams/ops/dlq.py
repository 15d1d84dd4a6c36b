"""Read the dead-letter topic (``tripwire dlq``): the newest records, a sample, counts by reason.

A record (``streams.contract.dlq.dlq_record``) carries ``reason``, ``detail``, the source
topic/partition/offset and the original bytes in base64. :func:`decode_payload` shows those
bytes as text only when that is safe on a terminal (valid UTF-8, printable: no control
characters, no bidi or zero-width tricks); anything else stays base64. Reading is a snapshot
(up to the end offsets seen at start), so the command terminates on a live topic.

>>> decode_payload("eyJhIjogMX0=")
{'text': '{"a": 1}', 'base64': None, 'encoding': 'utf-8'}
>>> decode_payload("G1sySg==")["encoding"], decode_payload("//4=")["encoding"]
('base64', 'base64')
>>> r = parse_record(b'{"reason":"schema","detail":"ts: missing","payload_b64":"e30=","rejected_at":5}', 3, 7)
>>> r.reason, r.partition, r.offset, r.payload["text"]
('schema', 3, 7, '{}')
>>> counts([r, r, parse_record(b"junk", 0, 1)])
{'schema': 2, '(unreadable record)': 1}
"""

from __future__ import annotations

import base64
import binascii
import random
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.kafka.security import KafkaSecurity
from streams.kafka.topic_read import TopicReadError, read_records

#: the reason shown for a DLQ record that is not a tripwire dead-letter record
UNREADABLE = "(unreadable record)"
#: Unicode categories never shown raw: controls, format characters (bidi overrides, zero-width), unassigned
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


class DlqReadError(RuntimeError):
    """The broker or the dead-letter topic could not be read."""


def safe_text(text: str) -> bool:
    """True when every character of ``text`` is printable (tabs and newlines aside).

    >>> safe_text("ok\\ttab"), safe_text("esc\\x1b[0m"), safe_text("rtl\\u202eevil"), safe_text("×")
    (True, False, False, True)
    """
    return all(ch in "\t\n" or unicodedata.category(ch) not in _UNSAFE_CATEGORIES for ch in text)


def decode_payload(b64: str | None) -> dict[str, Any]:
    """``{"text", "base64", "encoding"}``: the original bytes as text when valid, printable UTF-8, else base64."""
    try:
        raw = base64.b64decode(b64 or "", validate=True)
    except (binascii.Error, ValueError):
        return {"text": None, "base64": b64, "encoding": "base64"}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"text": None, "base64": b64, "encoding": "base64"}
    if not safe_text(text):
        return {"text": None, "base64": b64, "encoding": "base64"}
    return {"text": text, "base64": None, "encoding": "utf-8"}


@dataclass
class DlqRecord:
    """One dead-letter record, decoded for display."""

    partition: int
    offset: int
    reason: str
    detail: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    key: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    payload_bytes: int | None = None
    payload_truncated: bool = False
    rejected_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "offset": self.offset, "reason": self.reason, "detail": self.detail,
                "source": self.source, "key": self.key, "payload": self.payload,
                "payload_bytes": self.payload_bytes, "payload_truncated": self.payload_truncated,
                "rejected_at": self.rejected_at}


def parse_record(value: bytes | None, partition: int, offset: int, timestamp_ms: int | None = None) -> DlqRecord:
    """A :class:`DlqRecord` from a raw DLQ value (an unreadable one keeps its bytes, base64)."""
    try:
        doc = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        doc = None
    at = timestamp_ms / 1000.0 if timestamp_ms else None
    if not isinstance(doc, dict) or not isinstance(doc.get("reason"), str):
        b64 = base64.b64encode(value or b"").decode()
        return DlqRecord(partition, offset, UNREADABLE, "not a tripwire dead-letter record",
                         payload=decode_payload(b64), payload_bytes=len(value or b""), rejected_at=at)
    rejected = doc.get("rejected_at")
    return DlqRecord(
        partition, offset, doc["reason"][:64], str(doc.get("detail") or "")[:500],
        source=doc.get("source") if isinstance(doc.get("source"), dict) else {},
        key=decode_payload(doc.get("key_b64")) if doc.get("key_b64") else {},
        payload=decode_payload(doc.get("payload_b64") if isinstance(doc.get("payload_b64"), str) else None),
        payload_bytes=doc.get("payload_bytes") if isinstance(doc.get("payload_bytes"), int) else None,
        payload_truncated=bool(doc.get("payload_truncated")),
        rejected_at=float(rejected) if isinstance(rejected, (int, float)) and not isinstance(rejected, bool) else at,
    )


def counts(records: Iterable[DlqRecord]) -> dict[str, int]:
    """Records per reason, most frequent first."""
    return dict(Counter(r.reason for r in records).most_common())


def sample(records: list[DlqRecord], n: int, seed: int | None = None) -> list[DlqRecord]:
    """Up to ``n`` records per reason, chosen at random (``seed`` for a reproducible pick), oldest first.

    >>> rs = [DlqRecord(0, i, "a" if i % 3 else "b") for i in range(9)]
    >>> [(r.reason, r.offset) for r in sample(rs, 1, seed=1)] == sorted(
    ...     [(r.reason, r.offset) for r in sample(rs, 1, seed=1)], key=lambda x: x[1])
    True
    >>> sorted(Counter(r.reason for r in sample(rs, 2, seed=1)).items())
    [('a', 2), ('b', 2)]
    """
    rng = random.Random(seed)
    by_reason: dict[str, list[DlqRecord]] = {}
    for r in records:
        by_reason.setdefault(r.reason, []).append(r)
    picked = [r for group in by_reason.values() for r in (group if len(group) <= n else rng.sample(group, n))]
    return sorted(picked, key=lambda r: (r.rejected_at or 0.0, r.partition, r.offset))


def read_dlq(bootstrap: str, topic: str, *, last: int | None = None, timeout_s: float = 10.0,
             security: KafkaSecurity | None = None) -> list[DlqRecord]:
    """The records of ``topic`` up to the end offsets at call time, oldest first; with ``last``, only
    the newest ``last`` records (each partition read from ``end - last``)."""
    try:
        recs = read_records(bootstrap, topic, last=last, timeout_s=timeout_s, security=security)
    except TopicReadError as exc:
        raise DlqReadError(str(exc)) from None
    out = [parse_record(r.value, r.partition, r.offset, r.timestamp) for r in recs]
    out.sort(key=lambda r: (r.rejected_at or 0.0, r.partition, r.offset))
    return out[-last:] if last is not None and last > 0 else out


__all__ = ["DlqReadError", "DlqRecord", "counts", "decode_payload", "parse_record", "read_dlq", "safe_text",
           "sample"]
