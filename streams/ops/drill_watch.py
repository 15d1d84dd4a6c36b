"""What a drill observes: records on the breaker topics as they arrive, and polling with a deadline.

>>> poll_until(lambda: 42, timeout=1.0)
42
>>> poll_until(lambda: None, timeout=0.0) is None
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from streams.kafka.security import KafkaSecurity
from streams.ops.drill_config import DrillError


@dataclass
class Seen:
    """A record observed on a topic, with the wall time the drill saw it."""

    topic: str
    value: dict[str, Any]
    seen_at: float


class TopicWatcher:
    """Follow ``breaker-state`` and ``breaker-events`` from their current end (kafka-python, a thread)."""

    def __init__(self, bootstrap: str, topics: list[str], timeout_s: float = 15.0,
                 security: KafkaSecurity | None = None) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.records: list[Seen] = []
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                       client_id="tripwire-drill", request_timeout_ms=int(timeout_s * 1000) + 1000,
                                       **(security or KafkaSecurity()).kafka_python_kwargs())
        tps = []
        deadline = time.monotonic() + timeout_s
        for topic in topics:
            parts = self._consumer.partitions_for_topic(topic)
            while not parts and time.monotonic() < deadline:
                time.sleep(0.2)
                self._consumer.topics()
                parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                self._consumer.close()
                raise DrillError(f"topic {topic!r} not found on the broker")
            tps.extend(TopicPartition(topic, p) for p in parts)
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before any drill traffic is sent
            self._consumer.position(tp)
        self._thread = threading.Thread(target=self._run, name="drill-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batches = self._consumer.poll(timeout_ms=100)
            except Exception as exc:  # noqa: BLE001 - reported on the step that needed it
                self.error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.5)
                continue
            now = time.time()
            for tp, recs in batches.items():
                for rec in recs:
                    if rec.value is None:
                        continue
                    try:
                        value = orjson.loads(rec.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(value, dict):
                        with self._lock:
                            self.records.append(Seen(tp.topic, value, now))

    def find(self, topic: str, pred: Callable[[dict[str, Any]], bool]) -> Seen | None:
        with self._lock:
            for rec in self.records:
                if rec.topic == topic and pred(rec.value):
                    return rec
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def poll_until(pred: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``pred`` until truthy (returned) or ``timeout`` (None). Exceptions count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = pred()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
