"""Replay a JSONL file of trace events into Kafka (``tripwire replay``).

Every line (one event or a JSON array of events) is first judged by the worker's own decoder
(:func:`streams.contract.decode.decode_message`: size, JSON, schema v1, ids) and, for the
timestamps that will be sent, the worker's ``ts_future`` rule, so :func:`validate_file` reports
exactly the events the worker would dead-letter. What happens to those is the caller's choice
(``invalid``): ``"refuse"`` sends nothing when there are any (``tripwire replay`` without
``--skip-invalid``), ``"skip"`` sends the rest, ``"send"`` sends them too (to exercise the
dead-letter path: the old behaviour).

Lines are sent in file order. ``rebase`` moves timestamps to now: with ``speed`` > 0 the first
event happens now and sending is paced to the compressed timestamps; with ``speed`` 0 (as fast
as possible) the newest event happens now and the rest keep their spacing in the past, so no
rebased event is dated in the future (the worker would dead-letter it as ``ts_future``).
Consecutive events of the same agent are grouped into batched messages (``batch``), as
production emitters do, never past the worker's message size or batch limits.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()); f = d / "t.jsonl"
>>> _ = f.write_text('{"schema_version":"1","event_id":"e1","ts":1000,"agent_id":"a","kind":"refusal"}\\n'
...                  'not json\\n[{"schema_version":"1","event_id":"e2","ts":2000,"agent_id":"a","kind":"x"}]\\n')
>>> v = validate_file(f, now=5.0)
>>> v.lines, v.events, v.refused_events, v.by_reason, [(p.line, p.index) for p in v.problems]
(3, 1, 2, {'invalid_json': 1, 'unknown_kind': 1}, [(2, None), (3, 0)])
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from streams.contract.decode import MAX_BATCH_EVENTS, TS_FUTURE, decode_message, ts_future_problem
from streams.kafka.producer import TraceProducer
from streams.settings import DEFAULTS

#: what to do with the events the worker would dead-letter
InvalidPolicy = Literal["refuse", "skip", "send"]
#: problems kept in full for the report (the counts by reason cover the rest)
MAX_PROBLEMS = 1000


@dataclass(frozen=True, slots=True)
class LineProblem:
    """An event (``index`` of a batch line) or a whole line (``index`` None) the worker would dead-letter."""

    line: int
    reason: str
    detail: str
    index: int | None = None

    def __str__(self) -> str:
        """``<line>[<index>]: <reason>: <detail>`` (prefix it with the file name)."""
        where = f"{self.line}" + (f" (event {self.index} of the batch)" if self.index is not None else "")
        return f"{where}: {self.reason}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "index": self.index, "reason": self.reason, "detail": self.detail}


@dataclass
class Validation:
    """What the worker will accept of a file: acceptable events, refused ones by reason, time span."""

    lines: int = 0
    events: int = 0
    refused_events: int = 0
    refused_lines: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    problems: list[LineProblem] = field(default_factory=list)
    duplicates: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    #: (line number, index or None) of every refused element, for the sending pass
    bad: set[tuple[int, int | None]] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.refused_events == 0

    def to_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "events": self.events, "refused_events": self.refused_events,
                "refused_lines": self.refused_lines, "refused_by_reason": dict(sorted(self.by_reason.items())),
                "duplicate_event_ids": self.duplicates, "problems": [p.to_dict() for p in self.problems]}


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    raw: int = 0
    messages: int = 0
    seconds: float = 0.0
    #: events the worker will dead-letter that were skipped (``invalid="skip"``) or sent (``"send"``)
    skipped: int = 0
    sent_invalid: int = 0
    validation: Validation | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {"lines": self.lines, "events_sent": self.events, "messages": self.messages,
               "seconds": round(self.seconds, 3), "skipped_invalid": self.skipped, "sent_invalid": self.sent_invalid}
        if self.validation is not None:
            doc["validation"] = self.validation.to_dict()
        return doc


def _ts_seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value / 1000.0
    if isinstance(value, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of every non-blank line."""
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield n, line


def validate_file(path: Path, *, max_bytes: int = DEFAULTS.max_message_bytes, limit: int | None = None,
                  rebase: bool = False, max_future_skew_s: float = DEFAULTS.max_future_skew_s,
                  now: float | None = None) -> Validation:
    """Judge every line as the worker will (``decode_message`` with its size limit, then ``ts_future``
    against ``now`` for the timestamps that will be sent: rebased ones are never ahead)."""
    now = time.time() if now is None else now
    out = Validation()
    reasons: Counter[str] = Counter()
    seen_ids: set[str] = set()
    for n, line in read_lines(path):
        if limit is not None and out.lines >= limit:
            break
        out.lines += 1
        good, bad = decode_message(None, line, max_bytes=max_bytes)
        problems = [LineProblem(n, r.reason, r.detail, r.index) for r in bad]
        bad_idx = {r.index for r in bad}
        batch_line = any(r.index is not None for r in bad) or line.lstrip().startswith(b"[")
        indexes = [k for k in range(len(good) + len(bad)) if k not in bad_idx] if batch_line else [None] * len(good)
        for i, ev in zip(indexes, good, strict=True):
            if not rebase:
                detail = ts_future_problem(ev.ts, now, max_future_skew_s)
                if detail is not None:
                    problems.append(LineProblem(n, TS_FUTURE, detail, i))
                    continue
            out.first_ts = ev.ts if out.first_ts is None else min(out.first_ts, ev.ts)
            out.last_ts = ev.ts if out.last_ts is None else max(out.last_ts, ev.ts)
            if ev.event_id in seen_ids:
                out.duplicates += 1
            seen_ids.add(ev.event_id)
        out.events += len(good) - sum(1 for p in problems if p.reason == TS_FUTURE)
        if problems:
            out.refused_lines += 1
            for p in problems:
                reasons[p.reason] += 1
                out.bad.add((n, p.index))
                if len(out.problems) < MAX_PROBLEMS:
                    out.problems.append(p)
            out.refused_events += len(problems)
    out.by_reason = dict(reasons)
    return out


def _elements(n: int, line: bytes, validation: Validation, invalid: InvalidPolicy) -> tuple[list[Any], int, bool]:
    """(the events of line ``n`` to send, how many were left out, whether to send the line raw)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        doc = None
    whole_bad = (n, None) in validation.bad
    if invalid == "send":
        if not isinstance(doc, (dict, list)) or (isinstance(doc, list) and whole_bad):
            return [], 0, True
        return ([doc] if isinstance(doc, dict) else list(doc)), 0, False
    if whole_bad or not isinstance(doc, (dict, list)):
        return [], (len(doc) if isinstance(doc, list) else 1), False
    items = [doc] if isinstance(doc, dict) else list(doc)
    keep = [e for i, e in enumerate(items) if (n, i) not in validation.bad]
    return keep, len(items) - len(keep), False


def replay_file(
    path: Path,
    producer: TraceProducer,
    *,
    rebase: bool = False,
    speed: float = 0.0,
    batch: int = 1,
    limit: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    invalid: InvalidPolicy = "send",
    validation: Validation | None = None,
    max_bytes: int = DEFAULTS.max_message_bytes,
    max_future_skew_s: float = DEFAULTS.max_future_skew_s,
) -> ReplayStats:
    """Send the file's events; returns counts. ``on_progress`` gets lines done so far.

    ``validation`` (from :func:`validate_file`) is computed here when not given; with
    ``invalid="refuse"`` and refused events nothing is sent (``stats.validation`` says why)."""
    start_wall = time.time()
    if validation is None:
        validation = validate_file(path, max_bytes=max_bytes, limit=limit, rebase=rebase,
                                   max_future_skew_s=max_future_skew_s, now=start_wall)
    stats = ReplayStats(validation=validation)
    if invalid == "refuse" and not validation.ok:
        return stats
    first_ts: float | None = None
    # as fast as possible: the newest event lands now, the others keep their spacing in the past
    shift = (start_wall - validation.last_ts) if (rebase and speed <= 0 and validation.last_ts is not None) else None
    pending: list[dict[str, Any]] = []
    pending_bytes = 0
    pending_agent: str | None = None

    def flush_pending() -> None:
        nonlocal pending, pending_agent, pending_bytes
        if pending and pending_agent is not None:
            producer.send_batch(pending_agent, pending)
            stats.messages += 1
        pending, pending_agent, pending_bytes = [], None, 0

    for n, line in read_lines(path):
        if limit is not None and stats.lines >= limit:
            break
        stats.lines += 1
        events, left_out, raw = _elements(n, line, validation, invalid)
        stats.skipped += left_out
        if raw:
            flush_pending()
            producer.send_raw(None, line)
            stats.raw += 1
            stats.messages += 1
            stats.sent_invalid += 1
            continue
        for i, ev in enumerate(events):
            if not isinstance(ev, dict):
                flush_pending()
                producer.send_raw(None, orjson.dumps(ev))
                stats.raw += 1
                stats.messages += 1
                stats.sent_invalid += 1
                continue
            if invalid == "send" and ((n, None) in validation.bad or (n, i) in validation.bad):
                stats.sent_invalid += 1
            ts = _ts_seconds(ev.get("ts"))
            if ts is not None:
                if first_ts is None:
                    first_ts = ts
                offset = ts - first_ts
                if speed > 0:
                    offset /= speed
                    due = start_wall + offset
                    delay = due - time.time()
                    if delay > 0:
                        flush_pending()
                        time.sleep(delay)
                if rebase:
                    ev["ts"] = int(((ts + shift) if shift is not None else (start_wall + offset)) * 1000)
            agent = str(ev.get("agent_id", ""))
            size = len(orjson.dumps(ev)) + 1
            if pending and (agent != pending_agent or len(pending) >= min(batch, MAX_BATCH_EVENTS)
                            or pending_bytes + size + 2 > max_bytes):
                flush_pending()
            pending.append(ev)
            pending_bytes += size
            pending_agent = agent
            stats.events += 1
        if on_progress is not None and stats.lines % 500 == 0:
            on_progress(stats.lines)
    flush_pending()
    producer.flush()
    if on_progress is not None:
        on_progress(stats.lines)
    stats.seconds = time.time() - start_wall
    return stats
