"""Outage recovery: after the broker answers again, recreate what it lost and re-read the traces.

The breaker-state reader counts the broker's reconnects and resets (it came back without its
data). The decision timer calls :meth:`OutageRecovery.tick` first; on a new reconnect it
recreates missing topics, and when the broker came back empty it rewinds the trace partitions
to offset 0 and writes back what this worker knows (non-closed breaker states, every agent's
checkpoint, the dedupe memory).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from breakers.state_machine import CLOSED
from streams.engine.monitor import Monitor
from streams.engine.pipeline import TracePipeline
from streams.kafka.topics import ensure_topics
from streams.settings import Settings
from streams.worker.faust_compat import forget_changelog_positions
from streams.worker.state_reader import StateReader

log = logging.getLogger("tripwire.worker")

#: a rebalance this soon after the broker came back empty triggers one more rewind (see :meth:`on_assigned`)
POST_RESET_REWIND_S = 300.0


class OutageRecovery:
    """Notices broker reconnects and resets (via the breaker-state reader) and repairs after them."""

    def __init__(self, app: Any, settings: Settings, reader: StateReader, monitor: Monitor,
                 pipeline: TracePipeline, *, table: Any, state_topic: Any, ready: Callable[[], bool],
                 rewind: Callable[[], int]) -> None:
        self.app = app
        self.settings = settings
        self.reader = reader
        self.monitor = monitor
        self.pipeline = pipeline
        self.table = table
        self.state_topic = state_topic
        self.ready = ready
        #: re-reads every trace partition being read from offset 0 (:meth:`TraceReader.rewind`)
        self.rewind = rewind
        self.traces_topic = settings.topics.traces
        #: the reader's (resets, reconnects) already handled
        self.resets_handled = 0
        self.reconnects_handled = 0
        #: monotonic time of the last "broker came back empty"; a rebalance soon after it may seek the
        #: consumer to offsets committed before the reset (a commit in flight during the outage lands on
        #: the new, empty log): the trace partitions are then rewound once more, when the worker is ready
        self.last_reset_at = -1e9
        self.rewind_pending = False

    async def tick(self) -> None:
        """Called by the decision timer: handle a new reconnect, and a rewind left pending by a rebalance."""
        if (self.reader.resets, self.reader.reconnects) != (self.resets_handled, self.reconnects_handled):
            await self.after_outage()
        if self.rewind_pending and self.ready():
            self.rewind_pending = False
            rewound = self.rewind()
            log.warning("re-reading %d partitions of %s from offset 0 again after the post-outage rebalance "
                        "(duplicates are dropped by the restored dedupe memory)", rewound, self.traces_topic)

    def on_assigned(self) -> None:
        """A rebalance soon after a reset: rewind once more when ready (its seek may predate the reset)."""
        if time.monotonic() - self.last_reset_at < POST_RESET_REWIND_S:
            self.rewind_pending = True

    async def after_outage(self) -> None:
        """The broker answers again: recreate missing topics; if it lost its data, write back what we know."""
        resets, reconnects = self.reader.resets, self.reader.reconnects
        try:
            created = await asyncio.get_running_loop().run_in_executor(None, ensure_topics, self.settings)
            await self.table.changelog_topic.declare()
        except Exception as exc:  # noqa: BLE001 - the broker went away again: retried on the next tick
            log.warning("re-checking topics after the outage failed (will retry): %s", exc)
            return
        was_reset = resets != self.resets_handled
        self.resets_handled, self.reconnects_handled = resets, reconnects
        if created or was_reset:
            log.warning("the broker came back without its data (recreated: %s)", ", ".join(created) or "none")
            rewound = self.rewind()
            forget_changelog_positions(self.app)
            self.last_reset_at = time.monotonic()
            log.warning("re-reading %d partitions of %s from offset 0", rewound, self.traces_topic)
            await self.rewrite_lost_state()

    async def rewrite_lost_state(self) -> None:
        """The broker lost its data (memory-only broker restarted): write back what this worker knows."""
        monitor = self.monitor
        enforcing = [st for st in monitor.states.values() if st.state != CLOSED]
        for st in enforcing:
            await self.state_topic.send(key=st.scope.encode(), value=orjson.dumps(st.to_dict()))
        monitor.rewrite_checkpoints()
        self.pipeline.rewrite_dedupe()
        log.warning("breaker-state was reset: re-published %d non-closed breaker states; detector and dedupe "
                    "checkpoints of %d agents are rewritten", len(enforcing), len(monitor.agents))
