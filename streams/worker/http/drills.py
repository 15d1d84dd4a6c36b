"""Worker side of drills: ``POST /v1/drills`` and the drill metrics.

``tripwire drill`` reports each result twice: ``POST /v1/drills`` (operator token) to the
worker it drilled, and a ``{"type": "drill_result", ...}`` record on ``breaker-events``
(key ``drill``, partition 0). Every worker follows the ``drill`` records of partition 0 of
``breaker-events`` from the beginning, so all workers export the same
numbers and a restarted worker gets them back. Results are counted once per ``drill_id``.

With a signing keyring, only records a worker signed count (:mod:`streams.contract.internal_auth`):
a forged ``drill_result`` written straight to the topic would hide the drill-overdue alert. So a
result accepted by ``POST /v1/drills`` (operator token) is re-published by that worker, signed,
for every worker; the CLI's own unsigned record then only counts without a keyring (or under
``internal_auth: permissive``).

Metrics: ``tripwire_drill_runs_total{result="pass"|"fail"}`` and
``tripwire_drill_last_success_timestamp_seconds`` (absent until a drill passed), which feed the
``TripwireDrillOverdue`` alert and a Grafana annotation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson
from faust.web import Request, Response, View
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from breakers.operators import can
from streams.contract.internal_auth import BREAKER_EVENTS, RecordAuth
from streams.kafka.security import KafkaSecurity
from streams.worker.context import AppContext

log = logging.getLogger("tripwire.drill")
RESULT_KEY = b"drill"
MAX_REMEMBERED = 10_000
RESULTS = ("pass", "fail")
#: clock skew allowed on a reported drill's ``finished_at``
MAX_FUTURE_S = 60.0


class DrillStats:
    """Drill results seen by this worker (deduplicated by drill id)."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {r: 0 for r in RESULTS}
        self.last_success: float | None = None
        self.recent: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def record(self, doc: dict[str, Any]) -> bool:
        """Count one result; False when it was invalid or already counted."""
        drill_id, result = doc.get("drill_id"), doc.get("result")
        if not isinstance(drill_id, str) or not drill_id or len(drill_id) > 128 or result not in RESULTS:
            return False
        if drill_id in self.recent:
            return False
        finished = doc.get("finished_at")
        if finished is None or isinstance(finished, bool):
            finished = time.time()
        elif not isinstance(finished, (int, float)) or not math.isfinite(finished) \
                or finished > time.time() + MAX_FUTURE_S:
            return False  # a finish time in the future would hide the drill-overdue alert for as long as it says
        finished = float(finished)
        self.recent[drill_id] = {"drill_id": drill_id, "result": result, "finished_at": finished,
                                 "scope": str(doc.get("scope", ""))[:300], "profile": str(doc.get("profile", ""))[:64],
                                 "failed_steps": [str(s)[:64] for s in (doc.get("failed_steps") or [])][:20]}
        while len(self.recent) > MAX_REMEMBERED:
            self.recent.popitem(last=False)
        self.runs[result] += 1
        if result == "pass" and (self.last_success is None or finished > self.last_success):
            self.last_success = finished
        return True

    def families(self) -> Iterable[Metric]:
        runs = CounterMetricFamily("tripwire_drill_runs", "Circuit-breaker drills reported, by result.",
                                   labels=["result"])
        for r in RESULTS:
            runs.add_metric([r], self.runs[r])
        yield runs
        if self.last_success is not None:
            yield GaugeMetricFamily("tripwire_drill_last_success_timestamp_seconds",
                                    "Finish time of the last passing drill (unix seconds).", value=self.last_success)


#: drill results all go to partition 0 of breaker-events (written so by ``tripwire drill``)
RESULTS_PARTITION = 0


async def follow_results(bootstrap: str, topic: str, stats: DrillStats, security: KafkaSecurity | None = None,
                         auth: RecordAuth | None = None) -> None:
    """Read drill_result records of ``topic`` from the beginning, forever (reconnects on errors).

    With ``auth`` (a keyring), records not signed by a worker are skipped and counted by ``auth``.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    delay = 0.5
    while True:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    client_id="tripwire-drill-results", auto_offset_reset="earliest",
                                    **(security or KafkaSecurity()).aiokafka_kwargs())
        try:
            await consumer.start()
            parts: set[int] | None = None
            while not parts:
                await consumer.topics()
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    await asyncio.sleep(1.0)
            tp = TopicPartition(topic, RESULTS_PARTITION)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            delay = 0.5
            while True:
                for records in (await consumer.getmany(timeout_ms=1000, max_records=2000)).values():
                    for rec in records:
                        if rec.key != RESULT_KEY or not rec.value:
                            continue
                        if auth is not None and not auth.check(BREAKER_EVENTS, rec.key, rec.value, rec.headers)[0]:
                            continue
                        try:
                            doc = orjson.loads(rec.value)
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(doc, dict) and doc.get("type") == "drill_result":
                            stats.record(doc)
        except asyncio.CancelledError:
            raise
        except (KafkaError, OSError) as exc:
            log.warning("drill results reader: %s; retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        finally:
            await consumer.stop()


def register(ctx: AppContext) -> None:
    """Add ``/v1/drills`` and the drill metrics to the worker."""
    stats = DrillStats()
    api = ctx.api
    ctx.metrics.add_source(stats.families)
    ctx.app.tripwire_drills = stats  # type: ignore[attr-defined]

    @ctx.app.task
    async def read_drill_results() -> None:
        await follow_results(ctx.settings.bootstrap, ctx.settings.topics.breaker_events, stats, ctx.settings.kafka,
                             ctx.monitor.record_auth)

    @ctx.app.page("/v1/drills")
    class Drills(View):
        async def get(self, request: Request) -> Response:
            if api.auth_required:
                op = api.operators.authenticate(request.headers.get("Authorization"))
                if op is None or not can(op, "list"):
                    return self.json({"error": "unauthorized"}, status=401)
            return self.json({"runs": stats.runs, "last_success": stats.last_success,
                              "recent": list(stats.recent.values())[-20:]})

        async def post(self, request: Request) -> Response:
            op = api.operators.authenticate(request.headers.get("Authorization"))
            if op is None:
                return self.json({"error": "unauthorized: bearer token required"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
            if not can(op, "reset"):
                return self.json({"error": f"forbidden: role {op.role.name} may not report drills"}, status=403)
            body = await request.content.read(256 * 1024 + 1)  # type: ignore[attr-defined]
            if len(body) > 256 * 1024:
                return self.json({"error": "body too large"}, status=413)
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                return self.json({"error": "body must be JSON"}, status=400)
            if not isinstance(doc, dict) or doc.get("result") not in RESULTS or not doc.get("drill_id"):
                return self.json({"error": "need {drill_id, result: pass|fail, ...}"}, status=400)
            counted = stats.record(doc)
            log.info("drill %s reported by %s: %s", ascii(str(doc.get("drill_id"))[:64]), op.name,
                     ascii(str(doc.get("result"))))
            if counted and ctx.monitor.record_auth is not None and ctx.monitor.record_auth.enabled:
                # with a keyring only signed records count: re-published signed (with who reported it) so every
                # worker counts it; without one the CLI's own record on breaker-events already does
                await ctx.events_topic.send(key=RESULT_KEY, partition=RESULTS_PARTITION,
                                            value=orjson.dumps({**stats.recent[str(doc["drill_id"])],
                                                                "type": "drill_result", "reported_by": op.name}))
            return self.json({"ok": True, "counted": counted, "runs": stats.runs})


__all__ = ["RESULTS_PARTITION", "DrillStats", "follow_results", "register"]
