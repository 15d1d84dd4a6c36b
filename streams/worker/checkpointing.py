"""Checkpointing: detector state and dedupe memory to the ``scope-state`` changelog, then offset acks.

Every ``checkpoint_interval_s`` the app's timer calls :meth:`Checkpointer.write`: the dedupe
memory and the agents changed since the last checkpoint go to the changelog (each record on
its agent's own partition), and the offsets of the messages whose effects are now saved are
released and committed (:mod:`streams.worker.acks`, :meth:`TraceReader.commit`). A revoked partition is checkpointed whole
before its next owner starts (:meth:`on_revoked`); after an assignment the table recovery
hands the changelog back to :meth:`restore`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from streams.engine.monitor import Monitor, decode_checkpoint
from streams.engine.pipeline import DEDUPE_KEY_PREFIX, TracePipeline
from streams.worker.acks import AckGate
from streams.worker.faust_compat import store_put

log = logging.getLogger("tripwire.worker")

#: changelog key of the one-record batch closing each checkpoint (see :meth:`Checkpointer.write`)
CHECKPOINT_MARK = b"\x00checkpoint"


class Checkpointer:
    """Writes, evicts and restores the per-agent checkpoints of one worker."""

    def __init__(self, app: Any, table: Any, monitor: Monitor, pipeline: TracePipeline, acks: AckGate, *,
                 commit: Callable[[], Awaitable[None]], traces_topic: str, store: str,
                 max_bytes: int | None) -> None:
        self.app = app
        self.commit = commit
        self.table = table
        self.monitor = monitor
        self.pipeline = pipeline
        self.acks = acks
        self.traces_topic = traces_topic
        self.max_bytes = max_bytes
        #: an on-disk store (RocksDB) also gets a local copy of each record (see :meth:`save`)
        self.local_copy = not store.startswith("memory")
        #: the memory store re-reads the changelog on every assignment: drop what was restored
        self.drop_restored = store.startswith("memory")

    def save(self, partition: int, key: bytes, value: bytes | None) -> None:
        """One checkpoint record to the changelog (explicit partition: the agent's own).

        With an on-disk store (RocksDB) the record is also written locally: faust marks the
        changelog offset as persisted in the store when the send completes, and after a
        restart reads only the changelog past it.
        """
        if self.local_copy:
            store_put(self.table.data, partition, key, value)
        self.table.send_changelog(partition, key, value, key_serializer="raw", value_serializer="raw")

    async def write(self, everything: bool = False) -> None:
        """Checkpoint what changed (capped at ``max_bytes`` unless ``everything``), then release its acks."""
        # dedupe memory and detector state are taken in one synchronous step (no event in
        # between), dedupe first: on a changelog partition an agent state never lands
        # without the event ids it counted (see docs/operations.md, "Restart")
        touched: set[int] = set()
        written = self.monitor.checkpoint(None if everything else self.max_bytes)
        # the ids of agents the cap left dirty stay out of the dedupe checkpoint (their events are re-read)
        for partition, key, value in [*self.pipeline.checkpoint_dedupe(self.monitor.dirty_agents), *written]:
            self.save(partition, key.encode(), value)
            touched.add(partition)
        self.acks.take(None if everything else {key for _, key, _ in written}, self.monitor.dirty_agents)
        if touched:
            # Tansu reports a partition's end offset as (base offset of its last record batch) + 1,
            # so faust's recovery stops before the tail of a multi-record batch. A one-record
            # marker batch after the checkpoint makes the end offset cover every checkpoint record.
            await self.app.producer.flush()
            for partition in touched:
                self.table.send_changelog(partition, CHECKPOINT_MARK, b"{}", key_serializer="raw",
                                          value_serializer="raw")
            await self.app.producer.flush()
        await self.commit()  # their effects are on the changelog now: commit their offsets

    async def evict_idle(self) -> None:
        """Forget idle agents, and their checkpoints (a tombstone each)."""
        for partition, agent in self.monitor.evict_idle():
            self.save(partition, agent.encode(), None)

    async def on_revoked(self) -> None:
        """The trace reader has stopped (faust paused it): checkpoint everything and commit, so the next
        owner of a revoked partition resumes exactly where this worker's processing stopped."""
        await self.write(everything=True)
        await self.app.producer.flush()

    async def restore(self) -> None:
        """Table recovery finished: load the checkpoints of the assigned partitions, forget the others."""
        table, monitor, pipeline = self.table, self.monitor, self.pipeline
        assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.traces_topic}
        restored = 0
        dedupe: dict[int, list[bytes]] = {}
        prefix = DEDUPE_KEY_PREFIX.encode()
        for key, value in list(table.data.items()):
            if isinstance(key, bytes) and key.startswith(b"\x00"):  # dedupe chunks and checkpoint marks
                if key.startswith(prefix):
                    part = int(key[len(prefix):].split(b":", 1)[0])
                    if part in assigned:
                        dedupe.setdefault(part, []).append(value)
                if self.drop_restored:
                    del table.data[key]
                continue
            try:
                partition = decode_checkpoint(value).get("partition")
            except (ValueError, zlib.error, AttributeError):
                continue
            if partition in assigned:
                monitor.restore(key.decode() if isinstance(key, bytes) else str(key), value)
                restored += 1
            if self.drop_restored:  # the monitor holds the state now; don't keep a copy
                del table.data[key]
        dropped = monitor.drop_partitions(assigned)
        ids = sum(pipeline.restore_dedupe(part, chunks) for part, chunks in dedupe.items())
        log.info("state recovered: %d agents restored from the changelog, %d handed off, %d event ids for dedupe",
                 restored, dropped, ids)
