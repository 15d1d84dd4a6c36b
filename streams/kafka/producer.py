"""A small kafka-python producer for trace events (replay, synthetic traffic, drills)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from streams.kafka.probe import KafkaProbeError, probe
from streams.kafka.security import KafkaSecurity, KafkaSecurityError


class BrokerUnreachable(RuntimeError):
    """No broker answered at the bootstrap address."""


def connect_error(bootstrap: str, security: KafkaSecurity, exc: BaseException) -> str:
    """The message for a client that could not start although the probe passed (SASL: likely credentials)."""
    hint = f"; check sasl_username/sasl_password for {security.sasl_mechanism}" if security.sasl else ""
    return f"cannot use the Kafka broker at {bootstrap} ({security.describe()}): {type(exc).__name__}: {exc}{hint}"


def check_broker(bootstrap: str, security: KafkaSecurity, timeout_s: float = 5.0) -> None:
    """Fail fast with the reason (TCP, TLS, SASL offer) before a client retries for its whole timeout."""
    try:
        probe(bootstrap, security, timeout_s=timeout_s)
    except (KafkaProbeError, KafkaSecurityError) as exc:
        raise BrokerUnreachable(f"cannot use the Kafka broker at {bootstrap} ({security.describe()}): {exc}") from None


class TraceProducer:
    """Send events keyed by agent id; a list of one agent's events becomes one batched message."""

    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 10.0,
                 security: KafkaSecurity | None = None) -> None:
        self.topic = topic
        security = security or KafkaSecurity()
        check_broker(bootstrap, security, timeout_s=min(5.0, timeout_s))
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="tripwire-producer",
                linger_ms=20,
                acks=1,
                compression_type=None,
                request_timeout_ms=int(timeout_s * 1000),
                max_block_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(timeout_s * 1000),
                **security.kafka_python_kwargs(),
            )
        except (KafkaError, OSError, ValueError) as exc:
            raise BrokerUnreachable(connect_error(bootstrap, security, exc)) from exc
        self.sent_messages = 0
        self.sent_events = 0

    def send_batch(self, agent_id: str, events: list[dict[str, Any]], headers: list[tuple[str, bytes]] | None = None) -> None:
        value = orjson.dumps(events[0] if len(events) == 1 else events)
        self.send_raw(agent_id.encode(), value, headers)
        self.sent_events += len(events)

    def send_raw(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> None:
        self._producer.send(self.topic, key=key, value=value, headers=headers or [])
        self.sent_messages += 1

    def send_grouped(self, batches: dict[str, list[dict[str, Any]]]) -> None:
        for agent_id, events in batches.items():
            self.send_batch(agent_id, events)

    def send_many(self, events: Iterable[dict[str, Any]]) -> None:
        for ev in events:
            self.send_batch(str(ev.get("agent_id", "")), [ev])

    def flush(self, timeout_s: float = 30.0) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        try:
            self._producer.flush(timeout=10)
        finally:
            self._producer.close(timeout=5)
