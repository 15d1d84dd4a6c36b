"""Every worker reads all of ``breaker-state`` (compacted), so any worker answers authz for any scope.

A plain aiokafka consumer without a group: it assigns itself every partition,
reads from the beginning, reports ``caught_up`` once it reached the end offsets
seen at start, then follows new records. It reconnects by itself after a broker
outage (aiokafka retries); while the broker is away the last known states keep
answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.kafka.security import KafkaSecurity
from streams.worker.faust_compat import FETCH_MAX_WAIT_MS

log = logging.getLogger("tripwire.state_reader")

#: (value, key, headers) of one record; the headers carry the record signature (streams.contract.internal_auth)
Apply = Callable[[bytes | None, bytes | None, Sequence[tuple[str, bytes]]], None]


class StateReader:
    def __init__(self, bootstrap: str, topic: str, apply: Apply, security: KafkaSecurity | None = None) -> None:
        self.bootstrap = bootstrap
        self.security = security or KafkaSecurity()
        self.topic = topic
        self.apply = apply
        self.caught_up = False
        self.error: str | None = None
        self.records = 0
        #: records whose apply callback raised (skipped, logged)
        self.failed_records = 0
        #: broker connectivity, probed every ``probe_interval_s`` with a ListOffsets request
        self.probe_interval_s = 2.0
        self.last_ok = time.monotonic()
        self.broker_error: str | None = None
        self._failing_since = 0.0
        #: times the broker answered again after a failed probe (the app re-checks its topics then)
        self.reconnects = 0
        #: end offsets that went backwards: the topic was recreated (e.g. a memory-only broker restarted)
        self.resets = 0
        self._ends: dict[TopicPartition, int] = {}
        self._read_any: set[TopicPartition] = set()

    def broker_unreachable_s(self) -> float:
        """Seconds since the broker last answered a probe (0 while it answers)."""
        return 0.0 if self.broker_error is None else time.monotonic() - self._failing_since

    async def run(self) -> None:
        """Consume forever (until cancelled), restarting the consumer after errors."""
        delay = 0.5
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("%s reader: %s; retrying in %.1fs", self.topic, self.error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    client_id="tripwire-state-reader", auto_offset_reset="earliest",
                                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS, **self.security.aiokafka_kwargs())
        await consumer.start()
        try:
            partitions: set[int] | None = None
            waiting_since = time.monotonic()
            warned = False
            while not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(self.topic)
                if not partitions:
                    if not warned and time.monotonic() - waiting_since > 30:
                        warned = True
                        log.warning("topic %s does not exist (yet); create it (docs/deploy.md, Topics)", self.topic)
                    await asyncio.sleep(0.5)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            targets = await consumer.end_offsets(tps)
            self.error = None
            self._seen_ends(targets)
            probed = time.monotonic()
            if all(v == 0 for v in targets.values()):
                self.caught_up = True
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, records in batches.items():
                    for rec in records:
                        try:
                            self.apply(rec.value, rec.key, rec.headers)
                        except Exception:
                            self.failed_records += 1
                            log.exception("applying a record of %s[%d]@%d failed; skipped", tp.topic, tp.partition,
                                          rec.offset)
                        self.records += 1
                    if records:
                        self._read_any.add(tp)
                if time.monotonic() - probed >= self.probe_interval_s:
                    await self._probe(consumer, tps)
                    probed = time.monotonic()
                if not self.caught_up:
                    positions = {tp: await consumer.position(tp) for tp in tps}
                    if all(positions[tp] >= targets[tp] for tp in tps):
                        self.caught_up = True
                        log.info("breaker-state read: %d records", self.records)
        finally:
            await consumer.stop()

    async def _probe(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """One cheap round trip to the broker; records when it stops (and starts again) answering."""
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout=max(1.0, self.probe_interval_s))
        except (TimeoutError, KafkaError, OSError) as exc:
            if self.broker_error is None:
                log.warning("broker not answering: %s", type(exc).__name__)
                self._failing_since = time.monotonic()
            self.broker_error = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
            return
        if self.broker_error is not None:
            log.info("broker answering again after %.1fs", time.monotonic() - self._failing_since)
            self.reconnects += 1
        self.broker_error = None
        self.last_ok = time.monotonic()
        self._seen_ends(ends)

    def _seen_ends(self, ends: dict[TopicPartition, int]) -> None:
        # compared with earlier *reported* end offsets only: Tansu reports the base offset of the
        # last record batch + 1, below the offsets of records already read; an end offset of 0
        # on a partition we read records from means the topic was recreated empty
        if any(end < self._ends.get(tp, 0) or (end == 0 and tp in self._read_any) for tp, end in ends.items()):
            self._read_any.clear()
            self.resets += 1
            log.warning("%s was reset (end offsets went backwards): the broker lost its data", self.topic)
        self._ends.update(ends)
