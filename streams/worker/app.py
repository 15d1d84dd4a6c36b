"""The faust-streaming application: a thin transport around pipeline, monitor and API.

faust owns what it is good at: the consumer group, partition assignment, the
changelog-backed table that checkpoints detector state, offset commits and the web
server. Decoding (``pipeline``), statistics and decisions (``monitor`` →
``detectors`` / ``breakers``) and the HTTP logic (``api``) are plain Python objects
that this module feeds, so the transport stays thin and replaceable.

Data flow per worker::

    agent-traces ─► ingest agent ─► TracePipeline ─► Monitor.ingest      (hot path, per message)
                                  └► agent-traces-dlq                     (rejects, with reason)
    timer (0.25 s) ─► Monitor.evaluate ─► breaker-state (compacted) + breaker-events (audit)
                                        └► Alertmanager (escalations / open breakers)
    timer (2 s) ─► Monitor.checkpoint ─► scope-state table changelog (per agent, agent's partition)
    breaker-state ─► StateReader (every partition, every worker) ─► Monitor.states ─► /v1/authz
"""

from __future__ import annotations

import asyncio
import logging
import zlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from breakers.alertmanager import AsyncAlertmanager
from breakers.introspect import KeyRing
from breakers.operators import OperatorRegistry
from breakers.policy import PolicyInvalid, load_policy
from streams.worker import otlp_bridge
from streams.worker.http import drills, routes  # register(ctx) adds agents/routes
from streams.worker.http import ingest as http_ingest
from streams.worker.acks import AckGate
from streams.worker.alerting import AlertDispatcher
from streams.worker.http.api import Api
from streams.worker.faust_compat import (consumer_lag, forget_changelog_positions, rewind_to_start, shorten_fetch_wait,
                                  store_put)
from streams.worker.metrics import CachedSource, Metrics, gauge
from streams.engine.monitor import Change, Monitor, decode_checkpoint
from streams.engine.partials import HEARTBEAT_S as PARTIALS_HEARTBEAT_S
from streams.engine.partials import encode_partials
from streams.engine.pipeline import DEDUPE_KEY_PREFIX, TracePipeline
from streams.settings import Settings
from streams.worker.state_reader import StateReader
from streams.worker.views import breaker_families, monitor_families

log = logging.getLogger("tripwire.worker")

#: A group join waits up to the rebalance timeout for members to (re)join; Tansu
#: holds a join for about half of it. 10 s keeps failover and start-up quick while
#: staying well above the heartbeat interval.
REBALANCE_TIMEOUT_S = 10.0
SESSION_TIMEOUT_S = 10.0
HEARTBEAT_INTERVAL_S = 1.0
#: longest stretch the ingest agent runs without giving other tasks (timers, HTTP) a turn
YIELD_EVERY_S = 0.02
#: how often each worker publishes its partitions' cross-agent scope counts (streams.engine.partials)
PARTIALS_INTERVAL_S = 2.0
#: a rebalance this soon after the broker came back empty triggers one more rewind (see decide())
POST_RESET_REWIND_S = 300.0
#: changelog key of the one-record batch closing each checkpoint (see ``write_checkpoint``)
CHECKPOINT_MARK = b"\x00checkpoint"


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
    readiness: "Readiness"
    events_topic: Any
    traces_topic: Any


class Readiness:
    """Ready = joined the group with an assignment, tables recovered, breaker states read."""

    def __init__(self, app: faust.App, reader: StateReader) -> None:
        self.app = app
        self.reader = reader
        self.assigned_once = False

    def check(self) -> tuple[bool, str]:
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
        return True, "consuming"


def _operators(settings: Settings) -> OperatorRegistry:
    entries = list(settings.operators)
    if settings.operator_tokens_file:
        import yaml

        extra = yaml.safe_load(settings.operator_tokens_file.read_text()) or []
        entries.extend(extra.get("operators", []) if isinstance(extra, dict) else extra)
    return OperatorRegistry.from_config(entries)


def create_app(settings: Settings) -> faust.App:
    """Build the worker app from settings."""
    datadir = settings.data_dir / f"worker-{settings.web_port}"
    shorten_fetch_wait()
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=settings.kafka.faust_credentials(),
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
        consumer_max_fetch_size=8 * 1024 * 1024,
        stream_buffer_maxsize=16384,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        broker_rebalance_timeout=REBALANCE_TIMEOUT_S,
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL_S,
        table_standby_replicas=0,
    )
    policy = load_policy(settings.policy_file)
    monitor = Monitor(policy, lateness_s=settings.lateness_s, max_agents=settings.max_agents,
                      max_tools=settings.max_tools)
    pipeline = TracePipeline(settings, sink=monitor.ingest)
    acks = AckGate()
    metrics = Metrics()
    reader = StateReader(settings.bootstrap, settings.topics.breaker_state, monitor.apply_remote,
                         security=settings.kafka)
    # cross-agent scopes: every worker publishes its partitions' counts, the holder of partition 0 decides
    monitor.remote.app_id = settings.app_id
    monitor.assigned = set()
    monitor.partials_ready = False
    partials_reader = StateReader(settings.bootstrap, settings.topics.scope_partials, monitor.apply_partials,
                                  security=settings.kafka)
    readiness = Readiness(app, reader)
    counters = {"alert_ok": 0, "alert_error": 0, "reload_ok": 0, "reload_error": 0}

    metrics.add_source(pipeline.counters.families)
    metrics.add_source(CachedSource(lambda: monitor_families(monitor, settings), ttl_s=settings.metrics_cache_s))
    metrics.add_source(lambda: breaker_families(monitor, counters))
    metrics.add_source(lambda: [gauge("tripwire_worker_ready", "1 when the worker is ready (see /readyz).", [],
                                      [([], 1.0 if readiness.check()[0] else 0.0)])])
    metrics.add_source(lambda: [gauge("tripwire_cross_scope_decider",
                                      "1 on the worker that decides cross-agent scopes (holder of trace partition 0).",
                                      [], [([], 1.0 if monitor.decides_cross() else 0.0)])])
    metrics.add_source(lambda: [gauge("tripwire_consumer_lag_messages",
                                      "Messages behind the end of this worker's assigned trace partitions.",
                                      ["topic", "partition"], consumer_lag(app, settings.topics.traces))])

    traces_topic = settings.topics.traces
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    traces = app.topic(traces_topic, allow_empty=True, partitions=settings.partitions, **raw)
    dlq = app.topic(settings.topics.dlq, partitions=settings.partitions, **raw)
    state_topic = app.topic(settings.topics.breaker_state, partitions=settings.partitions, **raw)
    events_topic = app.topic(settings.topics.breaker_events, partitions=settings.partitions, **raw)
    partials_topic = app.topic(settings.topics.scope_partials, partitions=settings.partitions, **raw)
    # bytes keys/values: faust then uses the raw codec for writes *and* for recovery
    scope_state = app.Table("scope-state", partitions=settings.partitions, key_type=bytes, value_type=bytes)

    async def alert_failed(scope: str, to_state: str, error: str) -> None:
        await events_topic.send(key=scope.encode(), value=orjson.dumps(
            {"type": "alert_failed", "scope": scope, "to": to_state, "error": error, "ts": time.time()}))

    alerts = (AlertDispatcher(AsyncAlertmanager(settings.alertmanager_url), counters, alert_failed)
              if settings.alertmanager_url else None)

    async def publish(change: Change) -> None:
        st = change.state
        key = st.scope.encode()
        await state_topic.send(key=key, value=orjson.dumps(st.to_dict()))
        for t in change.transitions:
            await events_topic.send(key=key, value=orjson.dumps({"type": "transition", **t.to_dict()}))
            log.info("breaker %s: %s -> %s (%s) by %s", t.scope, t.from_state, t.to_state, t.reason[:200], t.actor)
            if alerts is not None:
                alerts.note(t)

    api = Api(monitor, _operators(settings),
              KeyRing.from_config(settings.jwt_keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience),
              publish, known=lambda: reader.caught_up,
              observe_authz=metrics.observe_authz)
    ctx = AppContext(app=app, settings=settings, pipeline=pipeline, monitor=monitor, metrics=metrics, api=api,
                     publish=publish, readiness=readiness, events_topic=events_topic, traces_topic=traces)
    app.tripwire = ctx  # type: ignore[attr-defined]

    @app.agent(traces, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        process = pipeline.process
        clock = time.monotonic
        next_yield = clock() + YIELD_EVERY_S
        hold = acks.hold
        # manual acks: a message's offset is committed only after the checkpoint that saved its
        # effects (see streams/worker/acks.py); a crash re-reads it, the restored dedupe memory drops it
        async for event in stream.noack().events():
            msg = event.message
            dead = process(msg.key, msg.value, topic=traces_topic, partition=msg.partition,
                           offset=msg.offset, headers=msg.headers)
            for letter in dead:
                await dlq.send(key=letter.key, value=letter.value, headers={"tripwire-reason": letter.reason.encode()})
            hold(msg.key.decode("utf-8", "replace") if msg.key else "", event)
            if clock() >= next_yield:
                # with a backlog the stream hands over buffered events without suspending;
                # yield so the decision timer and the HTTP API are never starved by ingest
                await asyncio.sleep(0)
                next_yield = clock() + YIELD_EVERY_S

    resets_handled = [0, 0]
    #: monotonic time of the last "broker came back empty"; a rebalance soon after it may seek the
    #: consumer to offsets committed before the reset (a commit in flight during the outage lands on
    #: the new, empty log): the trace partitions are then rewound once more, when the worker is ready
    last_reset_at = [-1e9]
    rewind_pending = [False]

    @app.timer(settings.evaluate_interval_s)
    async def decide() -> None:
        started = time.time()
        if (reader.resets, reader.reconnects) != tuple(resets_handled):
            await _after_outage()
        if rewind_pending[0] and readiness.check()[0]:
            rewind_pending[0] = False
            rewound = await rewind_to_start(app, traces_topic)
            log.warning("re-reading %d partitions of %s from offset 0 again after the post-outage rebalance "
                        "(duplicates are dropped by the restored dedupe memory)", rewound, traces_topic)
        for change in monitor.evaluate(started):
            await publish(change)
        while monitor.drift_reports:
            agent, report = monitor.drift_reports.popleft()
            await events_topic.send(key=f"agent:{agent}".encode(),
                                    value=orjson.dumps({"type": "drift", "agent": agent, **report.to_dict()}))
        for lag in monitor.decision_lags:
            metrics.decision_latency.observe(lag)
        monitor.decision_lags.clear()
        if alerts is not None and alerts.pending:
            await alerts.flush()

    async def _after_outage() -> None:
        """The broker answers again: recreate missing topics; if it lost its data, write back what we know."""
        from streams.kafka.topics import ensure_topics

        resets, reconnects = reader.resets, reader.reconnects
        try:
            created = await asyncio.get_running_loop().run_in_executor(None, ensure_topics, settings)
            await scope_state.changelog_topic.declare()
        except Exception as exc:  # noqa: BLE001 - the broker went away again: retried on the next tick
            log.warning("re-checking topics after the outage failed (will retry): %s", exc)
            return
        was_reset = resets != resets_handled[0]
        resets_handled[:] = [resets, reconnects]
        if created or was_reset:
            log.warning("the broker came back without its data (recreated: %s)", ", ".join(created) or "none")
            rewound = await rewind_to_start(app, traces_topic)
            forget_changelog_positions(app)
            last_reset_at[0] = time.monotonic()
            log.warning("re-reading %d partitions of %s from offset 0", rewound, traces_topic)
            await _rewrite_lost_state()

    async def _rewrite_lost_state() -> None:
        """The broker lost its data (memory-only broker restarted): write back what this worker knows."""
        enforcing = [st for st in monitor.states.values() if st.state != "closed"]
        for st in enforcing:
            await state_topic.send(key=st.scope.encode(), value=orjson.dumps(st.to_dict()))
        monitor.dirty_agents.update(monitor.agents)
        pipeline.rewrite_dedupe()
        log.warning("breaker-state was reset: re-published %d non-closed breaker states; detector and dedupe "
                    "checkpoints of %d agents are rewritten", len(enforcing), len(monitor.agents))

    if alerts is not None:
        @app.timer(30.0)
        async def repost_alerts() -> None:
            await alerts.repost()

    @app.timer(settings.checkpoint_interval_s)
    async def checkpoint() -> None:
        await write_checkpoint()

    local_copy = not settings.store.startswith("memory")

    def save(partition: int, key: bytes, value: bytes | None) -> None:
        """One checkpoint record to the changelog (explicit partition: the agent's own).

        With an on-disk store (RocksDB) the record is also written locally: faust marks the
        changelog offset as persisted in the store when the send completes, and after a
        restart reads only the changelog past it.
        """
        if local_copy:
            store_put(scope_state.data, partition, key, value)
        scope_state.send_changelog(partition, key, value, key_serializer="raw", value_serializer="raw")

    async def write_checkpoint(everything: bool = False) -> None:
        # dedupe memory and detector state are taken in one synchronous step (no event in
        # between), dedupe first: on a changelog partition an agent state never lands
        # without the event ids it counted (see docs/operations.md, "Restart")
        touched: set[int] = set()
        written = monitor.checkpoint(None if everything else settings.checkpoint_max_bytes)
        for partition, key, value in [*pipeline.checkpoint_dedupe(), *written]:
            save(partition, key.encode(), value)
            touched.add(partition)
        safe = acks.take(None if everything else {key for _, key, _ in written}, monitor.dirty_agents)
        if touched:
            # Tansu reports a partition's end offset as (base offset of its last record batch) + 1,
            # so faust's recovery stops before the tail of a multi-record batch. A one-record
            # marker batch after the checkpoint makes the end offset cover every checkpoint record.
            await app.producer.flush()
            for partition in touched:
                scope_state.send_changelog(partition, CHECKPOINT_MARK, b"{}", key_serializer="raw",
                                           value_serializer="raw")
            await app.producer.flush()
        AckGate.release(safe)  # their effects are on the changelog now: let faust commit them

    @app.timer(60.0)
    async def evict_idle_agents() -> None:
        for partition, agent in monitor.evict_idle():
            save(partition, agent.encode(), None)

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        # faust has drained the streams and committed their offsets: checkpoint now, so the
        # next owner of a revoked partition resumes exactly where the commit left off
        await write_checkpoint(everything=True)
        await app.producer.flush()

    drop_dedupe_keys = settings.store.startswith("memory")

    @scope_state.on_recover
    async def _restore() -> None:
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == traces_topic}
        restored = 0
        dedupe: dict[int, list[bytes]] = {}
        prefix = DEDUPE_KEY_PREFIX.encode()
        for key, value in list(scope_state.data.items()):
            if isinstance(key, bytes) and key.startswith(b"\x00"):  # dedupe chunks and checkpoint marks
                if key.startswith(prefix):
                    part = int(key[len(prefix):].split(b":", 1)[0])
                    if part in assigned:
                        dedupe.setdefault(part, []).append(value)
                if drop_dedupe_keys:  # memory store: recovery re-reads the changelog on every assignment
                    del scope_state.data[key]
                continue
            try:
                partition = decode_checkpoint(value).get("partition")
            except (ValueError, zlib.error, AttributeError):
                continue
            if partition in assigned:
                monitor.restore(key.decode() if isinstance(key, bytes) else str(key), value)
                restored += 1
            if drop_dedupe_keys:  # memory store: the monitor holds the state now; don't keep a copy
                del scope_state.data[key]
        dropped = monitor.drop_partitions(assigned)
        ids = sum(pipeline.restore_dedupe(part, chunks) for part, chunks in dedupe.items())
        log.info("state recovered: %d agents restored from the changelog, %d handed off, %d event ids for dedupe",
                 restored, dropped, ids)

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        readiness.assigned_once = True
        mine = {tp.partition for tp in assigned if tp.topic == traces_topic}
        monitor.assigned = set(mine)
        published.clear()  # publish every held partition's counts afresh
        if time.monotonic() - last_reset_at[0] < POST_RESET_REWIND_S:
            rewind_pending[0] = True
        for partition in list(pipeline._recent):
            if partition not in mine:
                pipeline.forget_partition(partition)
        log.info("assigned %d partitions of %s", len(mine), traces_topic)

    @app.task
    async def read_breaker_state() -> None:
        await reader.run()

    @app.task
    async def read_scope_partials() -> None:
        await partials_reader.run()

    published: dict[int, tuple[float, Any]] = {}

    @app.timer(PARTIALS_INTERVAL_S)
    async def publish_partials() -> None:
        """This worker's cross-agent counts per held partition, when they changed (or as a heartbeat)."""
        if not monitor.partials_ready and partials_reader.caught_up:
            monitor.partials_ready = True
            monitor.urgent_scopes.update(monitor.cross_scopes)
        if not monitor.cross_scopes:
            return  # the policy budgets no cross-agent scope (the shipped default): nothing to share
        now = time.time()
        for partition in sorted(monitor.assigned or ()):
            parts = monitor.partition_partials(partition)
            last = published.get(partition)
            if last is not None and last[1] == parts and now - last[0] < PARTIALS_HEARTBEAT_S:
                continue
            await partials_topic.send(key=f"{settings.app_id}:{partition}".encode(),
                                      value=encode_partials(settings.app_id, partition, parts, now))
            published[partition] = (now, parts)

    @app.timer(2.0)
    async def watch_policy() -> None:
        await _maybe_reload(False)

    policy_mtime = [_mtime(settings.policy_file)]
    reload_requested = [False]

    async def _maybe_reload(force: bool) -> None:
        mtime = _mtime(settings.policy_file)
        if not (force or reload_requested[0] or mtime != policy_mtime[0]):
            return
        reload_requested[0] = False
        policy_mtime[0] = mtime
        try:
            new = load_policy(settings.policy_file)
        except (PolicyInvalid, OSError, ValueError) as exc:
            counters["reload_error"] += 1
            log.error("policy reload failed, keeping version %s: %s", monitor.policy.policy_version, exc)
            await events_topic.send(key=b"policy", value=orjson.dumps(
                {"type": "policy_reload", "ok": False, "error": str(exc)[:2000], "kept": monitor.policy.policy_version,
                 "ts": time.time()}))
            return
        if new.policy_version != monitor.policy.policy_version:
            old = monitor.policy.policy_version
            monitor.set_policy(new)
            counters["reload_ok"] += 1
            log.info("policy reloaded: %s -> %s", old, new.policy_version)
            await events_topic.send(key=b"policy", value=orjson.dumps(
                {"type": "policy_reload", "ok": True, "from": old, "to": new.policy_version, "ts": time.time()}))

    @app.task
    async def install_sighup() -> None:
        def _request() -> None:
            reload_requested[0] = True

        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _request)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass

    for extension in (routes, drills, otlp_bridge, http_ingest):
        extension.register(ctx)
    return app


def _mtime(path: os.PathLike[str] | str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0

