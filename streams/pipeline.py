"""The per-message work of a worker, free of faust: decode, validate, dedupe, count.

The faust agent hands each Kafka message to :meth:`TracePipeline.process` and
publishes the dead-letter records it returns. Keeping this synchronous and
transport-free lets the benchmarks and tests drive it directly, and keeps faust a
thin, replaceable layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from streams.decode import decode_message
from streams.dedupe import RecentIds
from streams.dlq import dlq_record
from streams.metrics import IngestCounters
from streams.schema import TraceEvent
from streams.settings import Settings


@dataclass(slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes
    reason: str


EventSink = Callable[[int, list[TraceEvent]], None]


class TracePipeline:
    """Decode -> validate -> dedupe -> count -> hand accepted events to ``sink``."""

    def __init__(self, settings: Settings, sink: EventSink | None = None,
                 verify: Callable[[bytes | None, bytes, list[tuple[str, bytes]]], str | None] | None = None) -> None:
        self.settings = settings
        self.counters = IngestCounters()
        self.sink = sink
        self.verify = verify
        self._recent: dict[int, RecentIds] = {}

    def recent_ids(self, partition: int) -> RecentIds:
        recent = self._recent.get(partition)
        if recent is None:
            recent = self._recent[partition] = RecentIds(
                self.settings.dedupe_horizon_s, self.settings.dedupe_max_ids
            )
        return recent

    def forget_partition(self, partition: int) -> None:
        """Drop per-partition memory after the partition moved to another worker."""
        self._recent.pop(partition, None)

    def process(
        self,
        key: bytes | None,
        value: bytes | None,
        *,
        topic: str,
        partition: int,
        offset: int,
        headers: list[tuple[str, bytes]] | None = None,
        now: float | None = None,
    ) -> list[DeadLetter]:
        """Process one message; return the dead letters to publish."""
        counters = self.counters
        counters.messages += 1
        verify = None
        if self.verify is not None and value:
            hdrs = headers or []
            verify = lambda v: self.verify(key, v, hdrs)  # noqa: E731
        events, rejects = decode_message(key, value, max_bytes=self.settings.max_message_bytes, verify=verify)
        dead: list[DeadLetter] = []
        for reject in rejects:
            counters.rejected[reject.reason] += 1
            dead.append(
                DeadLetter(
                    key,
                    dlq_record(reject, topic=topic, partition=partition, offset=offset, key=key, value=value,
                               payload_limit=self.settings.dlq_payload_bytes),
                    reject.reason,
                )
            )
        if events:
            recent = self.recent_ids(partition)
            now = time.time() if now is None else now
            fresh = []
            tally = counters.events
            for ev in events:
                if recent.seen_before(ev.event_id, now):
                    counters.duplicates += 1
                    continue
                tally[ev.kind] += 1
                fresh.append(ev)
            if fresh and self.sink is not None:
                self.sink(partition, fresh)
        return dead
