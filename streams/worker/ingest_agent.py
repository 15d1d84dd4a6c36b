"""The ingest agent's loop: every message of ``agent-traces`` through the pipeline, held for the ack gate.

This is the hot path. Each message goes to :meth:`TracePipeline.process` (decode, validate,
dedupe, count); its dead letters go to the DLQ topic, and the message itself waits in the
:class:`~streams.worker.acks.AckGate` until the checkpoint that saved its effects lets faust
commit its offset.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streams.engine.pipeline import TracePipeline
from streams.worker.acks import AckGate

#: longest stretch the ingest agent runs without giving other tasks (timers, HTTP) a turn
YIELD_EVERY_S = 0.02


class IngestLoop:
    """Consumes a faust stream of raw trace messages without automatic acks."""

    def __init__(self, pipeline: TracePipeline, acks: AckGate, dlq: Any, traces_topic: str) -> None:
        self.pipeline = pipeline
        self.acks = acks
        self.dlq = dlq
        self.traces_topic = traces_topic

    async def run(self, stream: Any) -> None:
        """Process every message of ``stream`` (a faust stream of ``bytes``) until it ends."""
        process = self.pipeline.process
        dlq, topic = self.dlq, self.traces_topic
        clock = time.monotonic
        next_yield = clock() + YIELD_EVERY_S
        hold = self.acks.hold
        # manual acks: a message's offset is committed only after the checkpoint that saved its
        # effects (see streams/worker/acks.py); a crash re-reads it, the restored dedupe memory drops it
        async for event in stream.noack().events():
            msg = event.message
            dead = process(msg.key, msg.value, topic=topic, partition=msg.partition,
                           offset=msg.offset, headers=msg.headers)
            for letter in dead:
                await dlq.send(key=letter.key, value=letter.value, headers={"tripwire-reason": letter.reason.encode()})
            hold(msg.key.decode("utf-8", "replace") if msg.key else "", event)
            if clock() >= next_yield:
                # with a backlog the stream hands over buffered events without suspending;
                # yield so the decision timer and the HTTP API are never starved by ingest
                await asyncio.sleep(0)
                next_yield = clock() + YIELD_EVERY_S
