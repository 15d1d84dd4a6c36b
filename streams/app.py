"""The faust-streaming application: a thin transport around :class:`TracePipeline`.

faust owns what it is good at: the consumer group, partition assignment,
changelog-backed tables and offset commits. Everything else (decoding, detectors,
breakers) lives in plain Python objects that this module feeds, so the transport
stays replaceable.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.metrics import Metrics, gauge
from streams.pipeline import TracePipeline
from streams.settings import Settings

log = logging.getLogger("tripwire.worker")

#: A group join waits up to the rebalance timeout for members to (re)join; Tansu
#: holds a join for about half of it. 10 s keeps failover and start-up quick while
#: staying well above the heartbeat interval.
REBALANCE_TIMEOUT_S = 10.0
SESSION_TIMEOUT_S = 10.0
HEARTBEAT_INTERVAL_S = 1.0


class Readiness:
    """Ready = the consumer joined its group, holds an assignment and state is recovered."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.assigned_once = False
        self.last_error: str | None = None

    def check(self) -> tuple[bool, str]:
        app = self.app
        if not self.assigned_once:
            return False, "waiting for the consumer group assignment"
        if app.rebalancing:
            return False, "rebalancing"
        recovery = getattr(app.tables, "recovery", None)
        if recovery is not None and recovery.in_recovery:
            return False, "recovering table state from changelogs"
        if self.last_error:
            return False, self.last_error
        return True, "consuming"


def create_app(settings: Settings) -> faust.App:
    """Build the worker app from settings."""
    datadir = settings.data_dir / f"worker-{settings.web_port}"
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        store=settings.store,
        datadir=str(datadir),
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_in_thread=False,
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        stream_wait_empty=False,
        producer_linger_ms=5,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        broker_rebalance_timeout=REBALANCE_TIMEOUT_S,
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL_S,
    )
    metrics = Metrics()
    pipeline = TracePipeline(settings)
    metrics.add_source(pipeline.counters.families)
    readiness = Readiness(app)
    metrics.add_source(lambda: [gauge("tripwire_worker_ready", "1 when the worker is ready (see /readyz).", [],
                                      [([], 1.0 if readiness.check()[0] else 0.0)])])
    app.tripwire = {"settings": settings, "pipeline": pipeline, "metrics": metrics, "readiness": readiness}  # type: ignore[attr-defined]

    traces = app.topic(
        settings.topics.traces,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
        partitions=settings.partitions,
    )
    dlq = app.topic(settings.topics.dlq, key_type=bytes, value_type=bytes, key_serializer="raw",
                    value_serializer="raw", partitions=settings.partitions)
    traces_topic = settings.topics.traces

    @app.agent(traces, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        process = pipeline.process
        async for event in stream.events():
            msg = event.message
            dead = process(msg.key, msg.value, topic=traces_topic, partition=msg.partition,
                           offset=msg.offset, headers=msg.headers)
            for letter in dead:
                await dlq.send(key=letter.key, value=letter.value, headers={"tripwire-reason": letter.reason.encode()})

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        readiness.assigned_once = True
        mine = {tp.partition for tp in assigned if tp.topic == traces_topic}
        for partition in list(pipeline._recent):
            if partition not in mine:
                pipeline.forget_partition(partition)
        log.info("assigned %d partitions of %s", len(mine), traces_topic)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "time": time.time()})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            ready, why = readiness.check()
            return self.json({"ready": ready, "reason": why}, status=200 if ready else 503)

    return app
