"""A small kafka-python producer for trace events (replay, synthetic traffic, drills)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError


class BrokerUnreachable(RuntimeError):
    """No broker answered at the bootstrap address."""


def _any_reachable(bootstrap: str) -> bool:
    """Fail fast: does any bootstrap address accept TCP connections?"""
    from streams.procutil import port_open

    for addr in bootstrap.split(","):
        host, _, port = addr.strip().rpartition(":")
        if host and port.isdigit() and port_open(host.strip("[]"), int(port), timeout=2.0):
            return True
    return False


class TraceProducer:
    """Send events keyed by agent id; a list of one agent's events becomes one batched message."""

    def __init__(self, bootstrap: str, topic: str = "agent-traces", timeout_s: float = 10.0) -> None:
        self.topic = topic
        if not _any_reachable(bootstrap):
            raise BrokerUnreachable(f"cannot reach a Kafka broker at {bootstrap}: no address accepts connections")
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="tripwire-producer",
                linger_ms=20,
                acks=1,
                compression_type=None,
                request_timeout_ms=int(timeout_s * 1000),
                max_block_ms=int(timeout_s * 1000),
            )
        except (KafkaError, OSError, ValueError) as exc:
            raise BrokerUnreachable(f"cannot reach a Kafka broker at {bootstrap}: {exc}") from exc
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
