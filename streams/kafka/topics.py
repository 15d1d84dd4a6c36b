"""Create tripwire's Kafka topics when they are missing (idempotent)."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streams.settings import Settings

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> list[NewTopic]:
    """The topics a deployment needs; breaker-state is compacted (latest state per scope)."""
    t = settings.topics
    n = settings.partitions
    return [
        NewTopic(t.traces, n, 1),
        NewTopic(t.dlq, n, 1),
        NewTopic(t.breaker_state, n, 1, topic_configs={"cleanup.policy": "compact"}),
        NewTopic(t.breaker_events, n, 1),
        NewTopic(t.otlp, n, 1),
        NewTopic(t.scope_partials, n, 1, topic_configs={"cleanup.policy": "compact"}),
    ]


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create missing topics; return the names created. Raises KafkaError if unreachable."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap,
        client_id="tripwire-admin",
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
        **settings.kafka.kafka_python_kwargs(),
    )
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        created: list[str] = []
        for spec in missing:
            try:
                admin.create_topics([spec])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        admin.close()


__all__ = ["KafkaError", "ensure_topics", "topic_specs"]
