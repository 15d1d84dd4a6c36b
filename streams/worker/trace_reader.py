"""The hot path: ``agent-traces`` read in batches by a plain aiokafka consumer, outside faust's stream machinery.

faust assigns this worker its trace partitions (one consumer group, co-located with the
``scope-state`` changelog) and says when each may be read: it pauses every partition when a
rebalance starts and resumes a partition once table recovery has restored its agents
(:func:`streams.worker.faust_compat.divert_topic` turns those two calls into :meth:`TraceReader.pause`
and :meth:`TraceReader.resume`). In between, this reader fetches with ``getmany`` and hands each
message to :meth:`TracePipeline.process` (decode, validate, dedupe, count); dead letters go to the
DLQ topic. faust's own delivery cost two tasks, an event and a queue hop per message, which capped
one-event messages at ~7k/s.

Exactly-once effects are unchanged: each processed offset is held in the :class:`AckGate` under its
agent, and :meth:`commit` (called by the checkpoint after it saved their effects) commits each
partition no further than its first offset still held. A resumed partition starts again at its
committed offset, as faust's stream did; a message read past the commit before a crash or a
rebalance is read again and dropped by the restored dedupe memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.engine.pipeline import TracePipeline
from streams.kafka.security import KafkaSecurity
from streams.worker.acks import AckGate
from streams.worker.faust_compat import FETCH_MAX_WAIT_MS

log = logging.getLogger("tripwire.worker")

#: longest stretch the reader runs without giving other tasks (decision timer, HTTP authz) a turn
YIELD_EVERY_S = 0.02
#: records per ``getmany``: a batch is processed in slices of at most :data:`YIELD_EVERY_S`
MAX_RECORDS = 4000

#: commits ``{partition: next offset to read}`` through the group; True when the broker took them
Commit = Callable[[Mapping[int, int]], Awaitable[bool]]
#: sends one dead letter: (key, value, headers)
SendDead = Callable[[bytes | None, bytes, dict[str, bytes]], Awaitable[Any]]


class TraceReader:
    """Reads the trace partitions faust resumed, processes them in batches and commits what is checkpointed."""

    def __init__(self, bootstrap: str, topic: str, group_id: str, pipeline: TracePipeline, acks: AckGate, *,
                 send_dead: SendDead, commit: Commit, security: KafkaSecurity | None = None,
                 max_fetch_bytes: int = 8 * 1024 * 1024) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.pipeline = pipeline
        self.acks = acks
        self.send_dead = send_dead
        self._commit = commit
        self.security = security or KafkaSecurity()
        self.max_fetch_bytes = max_fetch_bytes
        #: partitions faust has resumed (may be read), and a counter bumped at every pause/resume
        self.wanted: set[int] = set()
        self._version = 0
        #: next offset to read, per partition, after the last processed message (what a commit may reach)
        self.positions: dict[int, int] = {}
        #: offsets last committed, per partition
        self.committed: dict[int, int] = {}
        #: partitions whose next read must start elsewhere than the consumer's position: resumed ones
        #: (at their committed offset) and rewound ones (at offset 0, see :meth:`rewind`)
        self._restart: dict[int, int | None] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._changed = asyncio.Event()
        self.error: str | None = None
        #: times the consumer was started again after an error
        self.restarts = 0
        #: dead letters too large to send, sent again without the original bytes
        self.letters_stripped = 0

    # -- called by faust (through faust_compat.divert_topic), synchronously -----------------------------
    def pause(self, partitions: set[int]) -> None:
        """Stop reading ``partitions`` now (a rebalance starts, or the worker stops)."""
        if partitions & self.wanted:
            self.wanted -= partitions
            self._bump()

    def resume(self, partitions: set[int]) -> None:
        """Read ``partitions`` again, each from its committed offset (their state was just restored).

        A partition already being read goes on where it is: faust may resume twice in one assignment,
        and starting again at the commit would hand the pipeline messages it already processed.
        """
        new = partitions - self.wanted
        if not new:
            return
        for partition in new:
            self.positions.pop(partition, None)
            self.committed.pop(partition, None)
            self._restart[partition] = None
        self.wanted |= new
        self._bump()

    def keep_only(self, assigned: set[int]) -> None:
        """A new assignment (after the revoke-time commit): forget the positions of partitions no longer ours,
        so a later commit never sends, and a later resume never trusts, what another worker has moved on from."""
        for table in (self.positions, self.committed, self._restart):
            for partition in [p for p in table if p not in assigned]:
                del table[partition]

    def rewind(self) -> int:
        """Re-read every partition being read from offset 0 (the broker came back without its log)."""
        for partition in self.wanted:
            self._restart[partition] = 0
            self.positions.pop(partition, None)
            self.committed.pop(partition, None)
        self.acks.forget(self.wanted)  # held offsets of the lost log would hide the new log's (lower) ones
        self._bump()
        return len(self.wanted)

    def _bump(self) -> None:
        self._version += 1
        self._changed.set()

    # -- offsets -----------------------------------------------------------------------------------------
    async def commit(self) -> None:
        """Commit, per partition, the next offset to read, held back to the first offset still in the ack gate."""
        floor = self.acks.floor()
        offsets: dict[int, int] = {}
        for partition, position in self.positions.items():
            offset = min(position, floor.get(partition, position))
            if self.committed.get(partition) != offset:
                offsets[partition] = offset
        if offsets and await self._commit(offsets):
            self.committed.update(offsets)

    def lag(self) -> list[tuple[int, int]]:
        """(partition, messages behind the end) for each partition being read, once its end is known."""
        consumer = self._consumer
        if consumer is None:
            return []
        rows = []
        for partition in sorted(self.wanted):
            tp = TopicPartition(self.topic, partition)
            try:
                end = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not assigned (yet)
                continue
            position = self.positions.get(partition)
            if end is None or position is None:
                position = _fetch_position(consumer, tp)
            if end is None or position is None:
                continue
            rows.append((partition, max(0, end - position)))
        return rows

    # -- the loop ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Read until cancelled, starting a new consumer after errors (a broker outage is retried by aiokafka)."""
        delay = 0.5
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("trace reader: %s; restarting in %.1fs", self.error, delay)
            except Exception as exc:  # noqa: BLE001 - the hot path never stops for good
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("trace reader failed; restarting in %.1fs (unprocessed messages are read again)",
                              delay)
            self.restarts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _consume(self) -> None:
        # group_id only to read the group's committed offsets (OffsetFetch); this consumer never joins
        # the group: faust's consumer is the member, and commits go through it
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group_id,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    client_id="tripwire-traces", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    max_partition_fetch_bytes=self.max_fetch_bytes,
                                    fetch_max_bytes=2 * self.max_fetch_bytes, **self.security.aiokafka_kwargs())
        await consumer.start()
        self._consumer = consumer
        self.error = None  # a consumer is up again: not "restarting" any more, even with nothing to read
        assigned_at = -1  # the version of the last assignment; -1: none yet
        try:
            while True:
                version = self._version
                if assigned_at != version:
                    assigned_at = version
                    self._assign(consumer, set(self.wanted))
                if not self.wanted:
                    self._changed.clear()
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=1.0)
                    except TimeoutError:
                        pass
                    continue
                batches = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
                self.error = None
                if batches and version == self._version:
                    await self._process(batches, version)
                # else: paused or resumed during the fetch; the next assignment re-reads from the right place
        finally:
            self._consumer = None
            await consumer.stop()

    def _assign(self, consumer: AIOKafkaConsumer, partitions: set[int]) -> None:
        """Assign ``partitions`` afresh (which resets every fetch position to the committed offset), then seek
        each partition that goes on to where processing stopped, and each rewound one to offset 0."""
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        for partition in partitions:
            tp = TopicPartition(self.topic, partition)
            if partition in self._restart:
                offset = self._restart.pop(partition)
                if offset is not None:
                    consumer.seek(tp, offset)
            elif partition in self.positions:
                consumer.seek(tp, self.positions[partition])

    async def _process(self, batches: Mapping[TopicPartition, list[Any]], version: int) -> None:
        """Process fetched records, yielding every :data:`YIELD_EVERY_S`; stop at a pause or resume."""
        process, hold, topic = self.pipeline.process, self.acks.hold, self.topic
        positions = self.positions
        clock = time.monotonic
        next_yield = clock() + YIELD_EVERY_S
        for tp, records in batches.items():
            partition = tp.partition
            for n, rec in enumerate(records):
                key = rec.key
                dead = process(key, rec.value, topic=topic, partition=partition, offset=rec.offset,
                               headers=rec.headers)
                for letter in dead:
                    await self._send_letter(letter.key, letter.value, letter.reason)
                if dead and version != self._version and self._restart.get(partition) == 0:
                    return  # rewound while its dead letters were sent: an offset of the lost log, not to keep
                hold(key.decode("utf-8", "replace") if key else "", partition, rec.offset)
                positions[partition] = rec.offset + 1
                if dead and version != self._version:
                    return  # paused while its dead letters were sent: this message is done, stop here
                if n & 31 == 31 and clock() >= next_yield:
                    # a backlog never starves the decision timer or the HTTP API
                    await asyncio.sleep(0)
                    next_yield = clock() + YIELD_EVERY_S
                    if version != self._version:
                        return  # paused or resumed meanwhile: the next assignment seeks back to ``positions``

    async def _send_letter(self, key: bytes | None, value: bytes, reason: str) -> None:
        """Send one dead letter; one too large to send goes again without the original bytes (its reason and
        source kept), so a message can never stall its partition on its own dead letter."""
        headers = {"tripwire-reason": reason.encode()}
        try:
            await self.send_dead(key, value, headers)
        except Exception as exc:  # noqa: BLE001 - only a too-large letter is retried stripped, the rest re-raised
            if "MessageSizeTooLarge" not in f"{type(exc).__name__} {exc!r} {exc.__cause__!r}":
                raise
            self.letters_stripped += 1
            log.warning("dead letter (%s) too large to send (%d bytes); sent without the original key and payload",
                        reason, len(value) + len(key or b""))
            await self.send_dead(None, _stripped(value), headers)


def _stripped(value: bytes) -> bytes:
    """A dead-letter record without the original key and payload bytes (their sizes kept)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return orjson.dumps({"payload_dropped": "dead letter too large to send"})
    if isinstance(doc, dict):
        doc.pop("key_b64", None)
        doc["payload_b64"] = ""
        doc["payload_truncated"] = True
        doc["payload_dropped"] = "dead letter too large to send"
        return orjson.dumps(doc)
    return orjson.dumps({"payload_dropped": "dead letter too large to send"})


def _fetch_position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The consumer's fetch position of ``tp`` when it has a valid one (aiokafka keeps it in its subscription)."""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
    except AttributeError:
        return None
    if state is None or not state.has_valid_position:
        return None
    return int(state.position)
