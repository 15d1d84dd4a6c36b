"""The trace reader on a real broker: faust assigns, the reader reads and commits after the checkpoint.

One event per message (the shape faust's per-message delivery was slowest at), over every
partition, with a poison message in the middle: every good event is counted once, the poison
goes to the DLQ with its reason, and once the checkpoint ran the group's committed offsets reach
the end of every partition — read back from the broker, not from the worker. faust itself never
delivers a trace message (its stream for the topic stays empty), and the lag gauge of every
assigned partition reads 0.
"""

from __future__ import annotations

import pytest

from helpers.faults import calls, committed, flags
from helpers.support import consume_all, start_worker, wait_for
from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process

pytestmark = pytest.mark.broker

AGENTS = [f"tr-agent-{i}" for i in range(8)]


def test_single_event_messages_are_read_outside_faust_and_committed_after_their_checkpoint(
        broker, tmp_path, isolated_topics) -> None:
    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.5"}
    app_id = f"tw-{isolated_topics.prefix}"
    w = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    try:
        sent = 0
        for i, agent in enumerate(AGENTS):
            for ev in calls(agent, 40) + flags(agent, 5):
                producer.send_batch(agent, [ev])
                sent += 1
            if i == 3:
                producer.send_raw(AGENTS[0].encode(), b"{not json")  # a poison message among good ones
        producer.flush()
        wait_for(lambda: w.metric("tripwire_events_total") == sent, 30, f"{sent} events counted")
        assert w.metric("tripwire_near_miss_rate", agent=AGENTS[5], tool="*", window="1h") == pytest.approx(5 / 40)
        dead = consume_all(broker.bootstrap, isolated_topics.dlq, 1)
        assert [dict(r.headers)["tripwire-reason"] for r in dead] == [b"invalid_json"]

        # the end of each partition, from its records (Tansu reports a log end offset as the base offset
        # of the last record batch + 1)
        ends: dict[int, int] = {}
        for rec in consume_all(broker.bootstrap, isolated_topics.traces, sent + 1):
            ends[rec.partition] = max(ends.get(rec.partition, 0), rec.offset + 1)
        assert sum(ends.values()) == sent + 1
        wait_for(lambda: committed(broker.bootstrap, app_id, isolated_topics.traces) == ends, 30,
                 f"committed offsets at the end of every partition ({ends})")
        wait_for(lambda: sum(v for _, v in _samples(w, "tripwire_consumer_lag_messages")) == 0, 10, "lag 0")
        lag = dict(_samples(w, "tripwire_consumer_lag_messages"))
        assert {int(p) for p in lag} == set(range(4)), lag  # a row for every assigned partition, even empty ones
        log = w.log.read_text(errors="replace")
        assert "faust delivered" not in log
    finally:
        producer.close()
        stop_process(w.proc)


def _samples(w, name: str) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.labels["partition"], s.value) for fam in text_string_to_metric_families(w.metrics_text())
            for s in fam.samples if s.name == name]
