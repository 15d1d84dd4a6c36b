"""Read a topic once, from a start position to the end offsets seen at call time (kafka-python, no group).

Used by the on-call commands that show what is on a topic right now (``tripwire incidents``,
``tripwire dlq``). Some brokers (Tansu) report the end offset of a multi-record batch short of its
last record, so after reaching the end offsets a few more polls drain what the broker still returns.
"""

from __future__ import annotations

import time
from typing import Any

from streams.kafka.security import KafkaSecurity

#: polls after the end offsets are reached (see the module docstring)
EXTRA_POLLS = 3


class TopicReadError(RuntimeError):
    """The topic could not be read: the message says why, in one line."""


def read_records(bootstrap: str, topic: str, *, last: int | None = None, timeout_s: float = 10.0,
                 security: KafkaSecurity | None = None) -> list[Any]:
    """The consumer records of ``topic`` (every partition) up to the end offsets at call time.

    ``last``: start each partition ``last`` records before its end (None: from the beginning).
    Raises :class:`TopicReadError` for an unreachable broker, a missing topic, a timeout or a Kafka error.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from streams.kafka.producer import BrokerUnreachable, check_broker, connect_error

    security = security or KafkaSecurity()
    try:
        check_broker(bootstrap, security)
    except BrokerUnreachable as exc:
        raise TopicReadError(str(exc)) from None
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                 request_timeout_ms=int(timeout_s * 1000) + 1000, **security.kafka_python_kwargs())
    except (KafkaError, OSError, ValueError) as exc:
        raise TopicReadError(connect_error(bootstrap, security, exc)) from exc
    try:
        deadline = time.monotonic() + timeout_s
        parts = consumer.partitions_for_topic(topic)
        while parts is None and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise TopicReadError(f"topic {topic!r} does not exist on {bootstrap} (no worker has created it yet?)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begin[tp] if last is None else max(begin[tp], end[tp] - last))
        out: list[Any] = []
        extra_polls = EXTRA_POLLS
        while True:
            batch = consumer.poll(timeout_ms=500)
            for recs in batch.values():
                out.extend(recs)
            behind = [tp for tp, off in end.items() if consumer.position(tp) < off]
            if not behind:
                if not batch or extra_polls == 0:
                    return out
                extra_polls -= 1
            elif time.monotonic() >= deadline:
                raise TopicReadError(f"timed out after {timeout_s:.0f}s reading {topic!r} "
                                     f"({len(out)} records read, {len(behind)} partitions behind)")
    except KafkaError as exc:
        raise TopicReadError(f"reading {topic!r} from {bootstrap} failed: {exc}") from exc
    finally:
        consumer.close()


__all__ = ["TopicReadError", "read_records"]
