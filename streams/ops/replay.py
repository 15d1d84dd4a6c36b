"""Replay a JSONL file of trace events into Kafka (``tripwire replay``).

Lines are sent in file order. ``rebase`` moves timestamps so the first event
happens now; ``speed`` compresses time (2 = twice as fast) and paces sending to
match; speed 0 sends as fast as possible. Consecutive events of the same agent can
be grouped into batched messages (``batch``), as production emitters do.
Unparseable lines are still sent as-is: the worker's dead-letter path judges them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.kafka.producer import TraceProducer


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    raw: int = 0
    messages: int = 0
    seconds: float = 0.0


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


def read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def replay_file(
    path: Path,
    producer: TraceProducer,
    *,
    rebase: bool = False,
    speed: float = 0.0,
    batch: int = 1,
    limit: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Send the file's events; returns counts. ``on_progress`` gets lines done so far."""
    stats = ReplayStats()
    start_wall = time.time()
    first_ts: float | None = None
    pending: list[dict[str, Any]] = []
    pending_agent: str | None = None

    def flush_pending() -> None:
        nonlocal pending, pending_agent
        if pending and pending_agent is not None:
            producer.send_batch(pending_agent, pending)
            stats.messages += 1
        pending, pending_agent = [], None

    for line in read_lines(path):
        if limit is not None and stats.lines >= limit:
            break
        stats.lines += 1
        try:
            ev = orjson.loads(line)
        except orjson.JSONDecodeError:
            ev = None
        if not isinstance(ev, dict):
            flush_pending()
            producer.send_raw(None, line)
            stats.raw += 1
            stats.messages += 1
            continue
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
                ev["ts"] = int((start_wall + offset) * 1000)
        agent = str(ev.get("agent_id", ""))
        if pending and (agent != pending_agent or len(pending) >= batch):
            flush_pending()
        pending.append(ev)
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
