"""Small, documented adjustments of faust-streaming 0.15.3 (pinned in pyproject.toml).

Keep every reach into faust internals here, so a faust upgrade has one place to check.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Protocol

#: what the worker consumer's fetch long-poll may wait for new data
FETCH_MAX_WAIT_MS = 100


def shorten_fetch_wait(max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Make faust's group consumer long-poll at most ``max_wait_ms``.

    faust 0.15.3 hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Brokers
    that do not answer a pending fetch early when data arrives (measured with Tansu:
    median delivery 380 ms at 1500 ms, 22 ms at 100 ms) then add up to that wait to
    every decision. Against Apache Kafka, which answers early, a short wait only costs
    a few more idle fetch round trips.
    """
    from faust.transport.drivers import aiokafka as driver

    thread_cls = driver.AIOKafkaConsumerThread
    original = thread_cls._create_worker_consumer
    if getattr(original, "_tripwire_patched", False):
        return

    @functools.wraps(original)
    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read when aiokafka builds its Fetcher at start()
        return consumer

    create._tripwire_patched = True  # type: ignore[attr-defined]
    thread_cls._create_worker_consumer = create


class DivertedReader(Protocol):
    """What reads a diverted topic instead of faust's fetcher (:class:`streams.worker.trace_reader.TraceReader`)."""

    def pause(self, partitions: set[int]) -> None: ...

    def resume(self, partitions: set[int]) -> None: ...


def divert_topic(app: Any, topic: str, reader: DivertedReader) -> None:
    """Keep faust's fetcher off ``topic`` and hand its pause and resume of that topic's partitions to ``reader``.

    faust keeps what it is good at for ``topic``: the group subscription and the assignment
    (co-located with the table changelogs). It pauses every assigned partition when a rebalance
    starts and resumes the stream partitions once table recovery has restored their state; those
    two calls become the reader's stop and go. The partitions never enter faust's set of active
    (fetched) partitions, so faust's per-message delivery (a task pair per message, an event, a
    queue hop) never runs for them.
    """
    from faust.transport.consumer import Consumer, ensure_TPset

    app._tripwire_diverted = {**getattr(app, "_tripwire_diverted", {}), topic: reader}
    if getattr(Consumer, "_tripwire_diverting", False):
        return
    set_active, pause, resume = Consumer._set_active_tps, Consumer.pause_partitions, Consumer.resume_partitions

    def diverted(consumer: Any) -> dict[str, DivertedReader]:
        return getattr(consumer.app, "_tripwire_diverted", None) or {}

    def split(consumer: Any, tps: Any) -> tuple[set[Any], dict[DivertedReader, set[int]]]:
        readers = diverted(consumer)
        kept: set[Any] = set()
        handed: dict[DivertedReader, set[int]] = {}
        for tp in ensure_TPset(tps):
            reader = readers.get(tp.topic)
            if reader is None:
                kept.add(tp)
            else:
                handed.setdefault(reader, set()).add(tp.partition)
        return kept, handed

    @functools.wraps(set_active)
    def _set_active_tps(self: Any, tps: Any) -> Any:
        return set_active(self, split(self, tps)[0])

    @functools.wraps(pause)
    def pause_partitions(self: Any, tps: Any) -> None:
        kept, handed = split(self, tps)
        pause(self, kept)
        for reader, partitions in handed.items():
            reader.pause(partitions)
        if handed:
            _pause_fetch(self, [tp for tp in ensure_TPset(tps) if tp not in kept])

    @functools.wraps(resume)
    def resume_partitions(self: Any, tps: Any) -> None:
        kept, handed = split(self, tps)
        resume(self, kept)
        for reader, partitions in handed.items():
            reader.resume(partitions)

    Consumer._set_active_tps = _set_active_tps
    Consumer.pause_partitions = pause_partitions
    Consumer.resume_partitions = resume_partitions
    Consumer._tripwire_diverting = True


def _pause_fetch(consumer: Any, tps: list[Any]) -> None:
    """Pause ``tps`` in the aiokafka consumer under faust's consumer thread as well.

    Otherwise its background fetcher would prefetch one buffer per diverted partition (up to
    ``consumer_max_fetch_size`` each) that faust never reads. faust pauses every assigned partition
    at each assignment, and aiokafka's pause lasts until the next assignment, so this covers
    every generation. Best effort: called from faust's loop, it runs in the consumer thread's loop.
    """
    thread = getattr(consumer, "_thread", None)
    inner = getattr(thread, "_consumer", None)
    loop = getattr(thread, "thread_loop", None)
    if inner is None or loop is None or loop.is_closed():
        return
    from aiokafka import TopicPartition

    def pause_assigned() -> None:
        assigned = inner.assignment()
        mine = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        inner.pause(*[tp for tp in mine if tp in assigned])

    loop.call_soon_threadsafe(pause_assigned)


def assigned_partitions(app: Any, topic: str) -> set[int]:
    """The partitions of ``topic`` the group assigned to this worker (empty before the consumer started)."""
    try:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}
    except Exception:  # noqa: BLE001 - consumer not started yet
        return set()


async def commit_offsets(app: Any, topic: str, offsets: Mapping[int, int]) -> bool:
    """Commit ``offsets`` (partition → next offset to read) of ``topic`` through faust's group consumer.

    Only a group member may commit for a live group (Kafka refuses commits from outside it), so
    the diverted reader commits through faust's consumer. Partitions no longer assigned are left
    out (their next owner re-reads past the last commit).
    """
    from faust.types import TP

    mine = assigned_partitions(app, topic)
    batch = {TP(topic, partition): offset for partition, offset in offsets.items() if partition in mine}
    if not batch:
        return False
    return bool(await app.consumer._commit_offsets(batch))


def store_put(store: Any, partition: int, key: bytes, value: bytes | None) -> None:
    """Write a table record for ``partition`` outside any stream event.

    faust's RocksDB store picks the partition's database from the *current event*, which a
    timer does not have; this writes to the partition's database directly.
    """
    db_for = getattr(store, "_db_for_partition", None)
    if db_for is None:  # e.g. the in-memory store: not partitioned
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value
        return
    db = db_for(partition)
    if value is None:
        store._key_index.pop(key, None)
        try:
            del db[key]
        except KeyError:
            pass
    else:
        store._key_index[key] = partition
        db.put(key, value)


def forget_changelog_positions(app: Any) -> int:
    """The broker lost its log: forget how far table recovery had read each changelog partition.

    faust keeps those positions across rebalances and starts the next recovery at
    ``max(kept position, earliest offset - 1)``. On a log that restarted at offset 0 the
    kept position points into nothing: recovery would skip the records written since, or
    wait forever for an offset below a highwater it never reaches. ``None`` makes it start
    from the earliest offset of the new log.
    """
    recovery = getattr(app.tables, "recovery", None)
    if recovery is None:
        return 0
    n = 0
    for offsets in (recovery.active_offsets, recovery.standby_offsets):
        for tp in list(offsets):
            offsets[tp] = None
            n += 1
    return n


def harden_web_server(app: Any, read_timeout_s: float, max_connections: int) -> None:
    """Bound what a slow or idle client can hold on faust's aiohttp web server (slow-loris).

    faust 0.15.3 builds its ``AppRunner`` without handler options, so aiohttp's defaults apply:
    a connection may take 3630 s to send its request headers and forever to send a body, and
    there is no connection cap. This sets, before the server starts:

    - ``keepalive_timeout = read_timeout_s``: aiohttp arms this timer when a connection opens and
      after each response, and closes the connection if no complete request head arrived by then
      (trickling header bytes does not re-arm it);
    - a middleware that closes the connection when a request's body is still incomplete
      ``read_timeout_s`` after its headers;
    - at most ``max_connections`` concurrent connections: more are closed on arrival.
    """
    import asyncio

    from aiohttp import web

    driver = app.web  # faust's aiohttp driver, created here; it starts with the worker
    runner = driver._runner
    runner._kwargs["keepalive_timeout"] = read_timeout_s

    def expire(request: Any) -> None:
        if not request.content.is_eof() and request.transport is not None:
            request.transport.close()

    @web.middleware
    async def body_deadline(request: Any, handler: Any) -> Any:
        if not request.body_exists or request.content.is_eof():
            return await handler(request)
        timer = asyncio.get_running_loop().call_later(read_timeout_s, expire, request)
        try:
            return await handler(request)
        finally:
            timer.cancel()

    driver.web_app.middlewares.append(body_deadline)
    runner.__class__ = _capped_runner(type(runner), max_connections)


def _capped_runner(base: type, max_connections: int) -> type:
    """A subclass of aiohttp's ``AppRunner`` (slotted: its methods cannot be patched on the instance)
    whose server closes connections past ``max_connections``."""

    class CappedRunner(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        async def _make_server(self) -> Any:
            server = await super()._make_server()
            register = server.connection_made

            def connection_made(handler: Any, transport: Any) -> None:
                register(handler, transport)
                if len(server._connections) > max_connections:
                    transport.close()

            server.connection_made = connection_made
            return server

    return CappedRunner
