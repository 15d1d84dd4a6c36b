"""Adversarial review of the trace reader (commit 2855f9f) on a real broker."""

from __future__ import annotations

import orjson
import pytest

from helpers.faults import calls, event
from helpers.support import consume_all, start_worker, wait_for
from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process

pytestmark = pytest.mark.broker

AGENTS = [f"rv-agent-{i}" for i in range(8)]


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {tp.partition: meta.offset for tp, meta in admin.list_group_offsets(group)[group].items()
                if tp.topic == topic and meta.offset >= 0}
    finally:
        admin.close()


def test_a_message_whose_dead_letters_are_too_large_to_send_does_not_stall_its_partition(
        broker, tmp_path, isolated_topics) -> None:
    """A message with a huge key (~500 kB, within Kafka's 1 MB) whose events are all rejected: each dead
    letter carries the key twice (as its Kafka key and base64 in ``key_b64``), > 1 MB. The reader must still
    dead-letter it (the reason is what matters) and go on with the good messages after it."""
    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.5"}
    app_id = f"tw-{isolated_topics.prefix}"
    w = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    try:
        big_key = b"k" * 500_000
        producer.send_raw(big_key, orjson.dumps([event("someone-else", "p-0"), event("someone-else", "p-1")]))
        sent = 0
        for agent in AGENTS:
            for ev in calls(agent, 10):
                producer.send_batch(agent, [ev])
                sent += 1
        producer.flush()
        wait_for(lambda: w.metric("tripwire_events_total") == sent, 30,
                 f"{sent} good events counted (the ones after the oversized poison too)")
        dead = consume_all(broker.bootstrap, isolated_topics.dlq, 1)
        assert dead and all(dict(r.headers)["tripwire-reason"] == b"key_mismatch" for r in dead)
        ends: dict[int, int] = {}
        for rec in consume_all(broker.bootstrap, isolated_topics.traces, sent + 1):
            ends[rec.partition] = max(ends.get(rec.partition, 0), rec.offset + 1)
        wait_for(lambda: committed(broker.bootstrap, app_id, isolated_topics.traces) == ends, 30,
                 f"committed offsets at the end of every partition ({ends})")
    finally:
        producer.close()
        stop_process(w.proc)
