"""What the worker's extensions (HTTP routes, ingest, drills, OTLP) are handed to wire themselves in.

``streams.worker.app`` builds one :class:`AppContext` and passes it to each extension's
``register(ctx)``. The extensions import this module, never the app factory, so the
imports only point one way: app → extensions → context.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust

from streams.engine.monitor import Change, Monitor
from streams.engine.pipeline import TracePipeline
from streams.settings import Settings
from streams.worker.http.api import Api
from streams.worker.metrics import Metrics
from streams.worker.state_reader import StateReader


class Readiness:
    """Ready = joined the group with an assignment, tables recovered, breaker states read, traces readable."""

    def __init__(self, app: faust.App, reader: StateReader, trace_error: Callable[[], str | None] = lambda: None) -> None:
        self.app = app
        self.reader = reader
        #: the trace reader's last error while it restarts its consumer (None when it reads)
        self.trace_error = trace_error
        self.assigned_once = False

    def check(self) -> tuple[bool, str]:
        """``(ready, why)``: the reason names what the worker is still waiting for."""
        if not self.assigned_once:
            return False, "waiting for the consumer group assignment"
        if self.app.rebalancing:
            return False, "rebalancing"
        recovery = getattr(self.app.tables, "recovery", None)
        if recovery is not None and recovery.in_recovery:
            return False, "recovering detector state from changelogs"
        if not self.reader.caught_up:
            return False, "reading breaker-state"
        if self.reader.error:
            return False, f"breaker-state reader: {self.reader.error}"
        if self.reader.broker_error is not None:
            return False, (f"broker unreachable for {self.reader.broker_unreachable_s():.0f}s "
                           f"({self.reader.broker_error[:120]}); authz answers from the last known breaker states")
        trace_error = self.trace_error()
        if trace_error:
            return False, f"trace reader restarting: {trace_error[:160]}"
        return True, "consuming"


@dataclass
class AppContext:
    """What extensions get to wire themselves in."""

    app: faust.App
    settings: Settings
    pipeline: TracePipeline
    monitor: Monitor
    metrics: Metrics
    api: Api
    publish: Callable[[Change], Awaitable[None]]
    readiness: Readiness
    events_topic: Any
    traces_topic: Any
