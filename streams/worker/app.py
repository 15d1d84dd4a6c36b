"""The faust-streaming application: wiring of the worker's named parts.

faust owns what it is good at: the consumer group, partition assignment, the
changelog-backed table that checkpoints detector state, offset commits and the web
server. Decoding (``pipeline``), statistics and decisions (``monitor`` →
``detectors`` / ``breakers``) and the HTTP logic (``api``) are plain Python objects
that this module feeds, so the transport stays thin and replaceable. Each timer and
task calls one named part of the worker:

- ``read_traces`` task → :class:`streams.worker.trace_reader.TraceReader` (the hot path: a plain aiokafka
  consumer on the trace partitions faust assigned, started and stopped by faust's pause/resume)
- ``decide`` timer → :class:`streams.worker.outage.OutageRecovery`, then :class:`streams.worker.decisions.Decisions`
- ``checkpoint`` and ``evict_idle_agents`` timers, the revoke and recovery hooks →
  :class:`streams.worker.checkpointing.Checkpointer`
- ``publish_partials`` timer → :class:`streams.worker.partials_publisher.PartialsPublisher`
- ``watch_policy`` timer and SIGHUP → :class:`streams.worker.policy_watch.PolicyWatcher`
- HTTP routes, HTTP ingest, drills, OTLP → each extension's ``register(ctx)`` with an
  :class:`streams.worker.context.AppContext`

Data flow per worker::

    agent-traces ─► TraceReader (getmany) ─► TracePipeline ─► Monitor.ingest   (hot path, per message)
                                          └► agent-traces-dlq                  (rejects, with reason)
    timer (0.25 s) ─► Monitor.evaluate ─► breaker-state (compacted) + breaker-events (audit)
                                        └► Alertmanager (escalations / open breakers)
    timer (2 s) ─► Monitor.checkpoint ─► scope-state table changelog (per agent, agent's partition)
    breaker-state ─► StateReader (every partition, every worker) ─► Monitor.states ─► /v1/authz
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import faust
import orjson
from prometheus_client.core import CounterMetricFamily, Metric

from breakers.introspect import KeyRing
from breakers.operators import OperatorRegistry
from breakers.policy import Policy, load_policy
from streams.contract.internal_auth import (
    BREAKER_EVENTS,
    BREAKER_STATE,
    PURPOSES,
    REASONS,
    SCOPE_PARTIALS,
    RecordAuth,
)
from streams.engine.monitor import Monitor
from streams.engine.pipeline import TracePipeline
from streams.settings import Settings
from streams.worker import otlp_bridge
from streams.worker.acks import AckGate
from streams.worker.alerting import AlertDispatcher
from streams.worker.alertmanager import AsyncAlertmanager
from streams.worker.checkpointing import Checkpointer
from streams.worker.context import AppContext, Readiness
from streams.worker.decisions import Decisions, SignedTopic
from streams.worker.faust_compat import commit_offsets, divert_topic, harden_web_server, shorten_fetch_wait
from streams.worker.http import drills, routes  # register(ctx) adds agents/routes
from streams.worker.http import ingest as http_ingest
from streams.worker.http.api import Api
from streams.worker.metrics import Metrics, gauge, ingest_families
from streams.worker.outage import OutageRecovery
from streams.worker.partials_publisher import PARTIALS_INTERVAL_S, PartialsPublisher
from streams.worker.policy_watch import PolicyWatcher
from streams.worker.state_reader import StateReader
from streams.worker.trace_reader import TraceReader
from streams.worker.views import authz_families, breaker_families, monitor_families

log = logging.getLogger("tripwire.worker")

#: A group join waits up to the rebalance timeout for members to (re)join; Tansu
#: holds a join for about half of it. 10 s keeps failover and start-up quick while
#: staying well above the heartbeat interval.
REBALANCE_TIMEOUT_S = 10.0
SESSION_TIMEOUT_S = 10.0
HEARTBEAT_INTERVAL_S = 1.0


def _operators(settings: Settings) -> OperatorRegistry:
    entries = list(settings.operators)
    if settings.operator_tokens_file:
        import yaml

        extra = yaml.safe_load(settings.operator_tokens_file.read_text()) or []
        entries.extend(extra.get("operators", []) if isinstance(extra, dict) else extra)
    return OperatorRegistry.from_config(entries)


def effective_policy(policy: Policy, settings: Settings) -> Policy:
    """The policy in force: the file's, with ``fail_mode`` overridden when the setting is given.

    The one place the two meet (at start and at every reload): ``TRIPWIRE_FAIL_MODE`` /
    ``fail_mode:`` in the settings wins over the policy file's ``fail_mode``; unset, the policy decides.
    """
    if settings.fail_mode is None or settings.fail_mode == policy.fail_mode:
        return policy
    return policy.model_copy(update={"fail_mode": settings.fail_mode})


def internal_auth_families(auth: RecordAuth, api: Api) -> Iterable[Metric]:
    """Internal records that were not authenticated, and operator actions by result."""
    fam = CounterMetricFamily("tripwire_internal_records_unauthenticated",
                              "Records of the internal topics (breaker-state, breaker-events, scope-partials) without "
                              "a valid worker signature, by topic role, reason (unauthenticated, bad_signature) and "
                              "outcome (ignored; accepted only under internal_auth: permissive).",
                              labels=["topic", "reason", "outcome"])
    if auth.enabled:
        for purpose in PURPOSES:
            for reason in REASONS:
                fam.add_metric([purpose, reason, "ignored"], auth.counts[(purpose, reason, "ignored")])
        for (purpose, reason, outcome), n in auth.counts.items():
            if outcome != "ignored":
                fam.add_metric([purpose, reason, outcome], n)
    yield fam
    ops = CounterMetricFamily("tripwire_operator_actions",
                              "Operator actions (force-open, reset, approve) by result: ok, or why refused "
                              "(unauthorized, forbidden, invalid, conflict, not_found); refused ones are audited "
                              "on breaker-events.", labels=["action", "result"])
    for (action, result), n in sorted(api.action_counts.items()):
        ops.add_metric([action, result], n)
    yield ops


def create_app(settings: Settings) -> faust.App:
    """Build the worker app from settings."""
    datadir = settings.data_dir / f"worker-{settings.web_port}"
    shorten_fetch_wait()
    record_auth = RecordAuth.from_settings(settings.signing_keys, settings.internal_key_ids, settings.internal_auth)
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
    harden_web_server(app, settings.http_read_timeout_s, settings.http_max_connections)
    policy = effective_policy(load_policy(settings.policy_file), settings)
    monitor = Monitor(policy, lateness_s=settings.lateness_s, max_agents=settings.max_agents,
                      max_tools=settings.max_tools, tuning=settings.engine)
    monitor.record_auth = record_auth
    pipeline = TracePipeline(settings, sink=monitor.ingest, drill_prefix=policy.drill_prefix)
    acks = AckGate()
    metrics = Metrics()
    reader = StateReader(settings.bootstrap, settings.topics.breaker_state, monitor.apply_remote,
                         security=settings.kafka)
    # cross-agent scopes: every worker publishes its partitions' counts, the holder of partition 0 decides
    monitor.share_with_workers(settings.app_id)

    def apply_partials(value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> None:
        if record_auth.check(SCOPE_PARTIALS, key, value, headers)[0]:  # forged counts could blind a scope
            monitor.apply_partials(value, key)

    partials_reader = StateReader(settings.bootstrap, settings.topics.scope_partials, apply_partials,
                                  security=settings.kafka)
    counters = {"alert_ok": 0, "alert_error": 0, "reload_ok": 0, "reload_error": 0}

    metrics.add_source(lambda: ingest_families(pipeline.counters))
    metrics.add_cached_source(lambda: monitor_families(monitor, settings), ttl_s=settings.metrics_cache_s)
    metrics.add_source(lambda: breaker_families(monitor, counters))
    metrics.add_source(lambda: [gauge("tripwire_worker_ready", "1 when the worker is ready (see /readyz).", [],
                                      [([], 1.0 if readiness.check()[0] else 0.0)])])
    metrics.add_source(lambda: [gauge("tripwire_cross_scope_decider",
                                      "1 on the worker that decides cross-agent scopes (holder of trace partition 0).",
                                      [], [([], 1.0 if monitor.decides_cross() else 0.0)])])

    traces_topic = settings.topics.traces
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    traces = app.topic(traces_topic, allow_empty=True, partitions=settings.partitions, **raw)
    dlq = app.topic(settings.topics.dlq, partitions=settings.partitions, **raw)
    trace_reader = TraceReader(
        settings.bootstrap, traces_topic, settings.app_id, pipeline, acks,
        send_dead=lambda key, value, headers: dlq.send(key=key, value=value, headers=headers),
        commit=lambda offsets: commit_offsets(app, traces_topic, offsets), security=settings.kafka)
    divert_topic(app, traces_topic, trace_reader)
    readiness = Readiness(app, reader, trace_error=lambda: trace_reader.error)
    metrics.add_source(lambda: [gauge("tripwire_consumer_lag_messages",
                                      "Messages behind the end of this worker's assigned trace partitions.",
                                      ["topic", "partition"],
                                      [([traces_topic, str(p)], float(n)) for p, n in trace_reader.lag()])])
    # every record a worker writes to the internal topics is signed (with a keyring): readers drop forgeries
    state_topic = SignedTopic(app.topic(settings.topics.breaker_state, partitions=settings.partitions, **raw),
                              record_auth, BREAKER_STATE)
    events_topic = SignedTopic(app.topic(settings.topics.breaker_events, partitions=settings.partitions, **raw),
                               record_auth, BREAKER_EVENTS)
    partials_topic = SignedTopic(app.topic(settings.topics.scope_partials, partitions=settings.partitions, **raw),
                                 record_auth, SCOPE_PARTIALS)
    # bytes keys/values: faust then uses the raw codec for writes *and* for recovery
    scope_state = app.Table("scope-state", partitions=settings.partitions, key_type=bytes, value_type=bytes)

    decisions = Decisions(monitor, metrics, state_topic=state_topic, events_topic=events_topic, alerts=None)
    if settings.alertmanager_url:
        am = AsyncAlertmanager(settings.alertmanager_url, runbook_url=settings.runbook_base_url)
        decisions.alerts = AlertDispatcher(am, counters, decisions.alert_failed)
    publish = decisions.publish

    api = Api(monitor, _operators(settings),
              KeyRing.from_config(settings.jwt_keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience),
              publish, known=lambda: reader.caught_up,
              observe_authz=metrics.observe_authz,
              audit=lambda record: events_topic.send(key=b"operator", value=orjson.dumps(record)))
    metrics.add_source(lambda: internal_auth_families(record_auth, api))
    metrics.add_source(lambda: authz_families(api.denied_by_scope, settings))
    ctx = AppContext(app=app, settings=settings, pipeline=pipeline, monitor=monitor, metrics=metrics, api=api,
                     publish=publish, readiness=readiness, events_topic=events_topic, traces_topic=traces)
    app.tripwire = ctx  # type: ignore[attr-defined]

    @app.agent(traces, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        """Subscribes the group to the traces topic, so faust assigns its partitions (with the scope-state
        changelog partitions of the same numbers). faust never fetches them (``divert_topic``): the
        records are read by ``read_traces``; this stream stays empty."""
        async for event in stream.noack().events():  # pragma: no cover - faust does not fetch this topic
            log.error("faust delivered %s[%d]@%d; it is read by the trace reader and ignored here",
                      traces_topic, event.message.partition, event.message.offset)

    @app.task
    async def read_traces() -> None:
        await trace_reader.run()

    checkpointer = Checkpointer(app, scope_state, monitor, pipeline, acks, commit=trace_reader.commit,
                                traces_topic=traces_topic, store=settings.store,
                                max_bytes=settings.checkpoint_max_bytes)
    outage = OutageRecovery(app, settings, reader, monitor, pipeline, table=scope_state, state_topic=state_topic,
                            ready=lambda: readiness.check()[0], rewind=trace_reader.rewind)
    partials = PartialsPublisher(monitor, partials_reader, partials_topic, settings.app_id)
    policy_watch = PolicyWatcher(settings.policy_file, monitor, counters, events_topic,
                                 adjust=lambda p: effective_policy(p, settings))

    @app.timer(settings.evaluate_interval_s)
    async def decide() -> None:
        started = time.time()
        await outage.tick()
        await decisions.tick(started)

    if decisions.alerts is not None:
        @app.timer(30.0)
        async def repost_alerts() -> None:
            await decisions.alerts.repost()

    @app.timer(settings.checkpoint_interval_s)
    async def checkpoint() -> None:
        await checkpointer.write()

    @app.timer(60.0)
    async def evict_idle_agents() -> None:
        await checkpointer.evict_idle()

    @scope_state.on_recover
    async def _restore() -> None:
        await checkpointer.restore()

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        await checkpointer.on_revoked()

    @app.on_before_shutdown.connect
    async def _shutdown(sender: Any, **_: Any) -> None:
        # a graceful stop (SIGTERM) does not run the revoke hook (faust skips it once stopping), but
        # faust has paused the reader by now: checkpoint everything and commit, as on a revoke, so the
        # next owner starts where this worker stopped, from a complete checkpoint closed by its marker
        await checkpointer.on_revoked()

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        readiness.assigned_once = True
        mine = {tp.partition for tp in assigned if tp.topic == traces_topic}
        monitor.set_assignment(mine)
        trace_reader.keep_only(mine)
        partials.forget()
        outage.on_assigned()
        for partition in pipeline.held_partitions():
            if partition not in mine:
                pipeline.forget_partition(partition)
        log.info("assigned %d partitions of %s", len(mine), traces_topic)

    @app.task
    async def read_breaker_state() -> None:
        await reader.run()

    @app.task
    async def read_scope_partials() -> None:
        await partials_reader.run()

    @app.timer(PARTIALS_INTERVAL_S)
    async def publish_partials() -> None:
        await partials.publish()

    @app.timer(2.0)
    async def watch_policy() -> None:
        await policy_watch.poll()

    @app.task
    async def install_sighup() -> None:
        policy_watch.install_sighup()

    for extension in (routes, drills, otlp_bridge, http_ingest):
        extension.register(ctx)
    return app

