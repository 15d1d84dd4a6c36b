"""Partials publishing: this worker's cross-agent scope counts per held partition, to ``scope-partials``.

Every worker publishes the counts of its trace partitions (:mod:`streams.engine.partials`);
the holder of partition 0 adds them up and decides the cross-agent scopes. A partition's
counts are sent when they changed, or as a heartbeat every ``HEARTBEAT_S``.
"""

from __future__ import annotations

import time
from typing import Any

from streams.engine.monitor import Monitor
from streams.engine.partials import HEARTBEAT_S, encode_partials
from streams.worker.state_reader import StateReader

#: how often each worker publishes its partitions' cross-agent scope counts
PARTIALS_INTERVAL_S = 2.0


class PartialsPublisher:
    """Sends changed partition counts; notes when the other workers' counts have been read."""

    def __init__(self, monitor: Monitor, reader: StateReader, topic: Any, app_id: str) -> None:
        self.monitor = monitor
        self.reader = reader
        self.topic = topic
        self.app_id = app_id
        #: partition -> (sent at, counts) of the last record sent
        self.published: dict[int, tuple[float, Any]] = {}

    def forget(self) -> None:
        """After a rebalance: publish every held partition's counts afresh."""
        self.published.clear()

    async def publish(self) -> None:
        """This worker's cross-agent counts per held partition, when they changed (or as a heartbeat)."""
        monitor = self.monitor
        if self.reader.caught_up:
            monitor.partials_caught_up()  # once: the decider may decide cross-agent scopes now
        if not monitor.has_cross_scopes():
            return  # the policy budgets no cross-agent scope (the shipped default): nothing to share
        now = time.time()
        for partition in monitor.held_partitions():
            parts = monitor.partition_partials(partition)
            last = self.published.get(partition)
            if last is not None and last[1] == parts and now - last[0] < HEARTBEAT_S:
                continue
            await self.topic.send(key=f"{self.app_id}:{partition}".encode(),
                                  value=encode_partials(self.app_id, partition, parts, now))
            self.published[partition] = (now, parts)
