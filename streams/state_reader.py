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
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger("tripwire.state_reader")

Apply = Callable[[bytes | None, bytes | None], None]


class StateReader:
    def __init__(self, bootstrap: str, topic: str, apply: Apply) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.apply = apply
        self.caught_up = False
        self.error: str | None = None
        self.records = 0

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
                log.warning("breaker-state reader: %s; retrying in %.1fs", self.error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    client_id="tripwire-state-reader", auto_offset_reset="earliest")
        await consumer.start()
        try:
            partitions: set[int] | None = None
            while not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(self.topic)
                if not partitions:
                    await asyncio.sleep(0.5)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            targets = await consumer.end_offsets(tps)
            self.error = None
            if all(v == 0 for v in targets.values()):
                self.caught_up = True
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batches.values():
                    for rec in records:
                        self.apply(rec.value, rec.key)
                        self.records += 1
                if not self.caught_up:
                    positions = {tp: await consumer.position(tp) for tp in tps}
                    if all(positions[tp] >= targets[tp] for tp in tps):
                        self.caught_up = True
                        log.info("breaker-state read: %d records", self.records)
        finally:
            await consumer.stop()
