"""Small, documented adjustments of faust-streaming 0.15.3 (pinned in pyproject.toml).

Keep every reach into faust internals here, so a faust upgrade has one place to check.
"""

from __future__ import annotations

import functools
from typing import Any

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


def consumer_lag(app: Any, topic: str) -> list[tuple[list[str], float]]:
    """(labels, lag) per assigned partition of ``topic``: log end offset minus the next offset to read."""
    rows: list[tuple[list[str], float]] = []
    try:
        consumer = app.consumer
        assigned = [tp for tp in consumer.assignment() if tp.topic == topic]
    except Exception:  # noqa: BLE001 - consumer not started yet: no rows
        return rows
    for tp in sorted(assigned, key=lambda t: t.partition):
        try:
            end = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - end offset not fetched yet
            continue
        if end is None:
            continue
        read = consumer._read_offset.get(tp)
        position = read + 1 if read is not None else (consumer._committed_offset.get(tp) or 0)
        rows.append(([topic, str(tp.partition)], float(max(0, end - position))))
    return rows


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


async def rewind_to_start(app: Any, topic: str) -> int:
    """Re-read every assigned partition of ``topic`` from offset 0 (the broker lost its log).

    A broker that comes back empty restarts each partition at offset 0, while the consumer
    still holds its old positions: without this it would skip new records up to the old
    read offset, and faust would refuse their acks as below the old committed offset.
    """
    consumer = app.consumer
    tps = [tp for tp in consumer.assignment() if tp.topic == topic]
    for tp in tps:
        consumer._committed_offset[tp] = None
        await consumer.seek(tp, 0)
    return len(tps)


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
