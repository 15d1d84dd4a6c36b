"""event_id dedupe survives a kill -9: redelivered and re-sent events are counted exactly once.

The worker checkpoints each partition's recent event ids with the detector state
(scope-state changelog, keys ``\\x00dedupe:<partition>:<slot>``). Here it is killed
right after that checkpoint landed, before or after the offset commit that follows it;
the restarted worker must recognise every event it is handed again —
redelivered from uncommitted offsets or re-sent by the producer — as a duplicate,
and count genuinely new events once.
"""

from __future__ import annotations

import time

import orjson
import pytest

from helpers.faults import calls, changelog_records, flags, kill9
from streams.ops.procutil import stop_process
from streams.kafka.producer import TraceProducer
from helpers.support import start_worker, wait_for

pytestmark = pytest.mark.broker

AGENT = "dd-agent"


def checkpointed_ids(bootstrap: str, changelog: str) -> tuple[set[str], set[str]]:
    """(event ids in dedupe chunks, agent keys) currently in the scope-state changelog."""
    ids: set[str] = set()
    agents: set[str] = set()
    for key, value in changelog_records(bootstrap, changelog):
        if key.startswith(b"\x00dedupe:"):
            ids.update(pair[0] for pair in orjson.loads(value)["ids"])
        elif not key.startswith(b"\x00"):
            agents.add(key.decode())
    return ids, agents


def steady(read, quiet_s: float = 2.0, timeout: float = 30.0) -> float:  # type: ignore[no-untyped-def]
    """A figure once it has not changed for ``quiet_s`` (fails after ``timeout``)."""
    last, since, deadline = read(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return last
    raise AssertionError(f"the figure kept changing for {timeout}s (last {last})")


def test_dedupe_memory_survives_kill9(broker, tmp_path, isolated_topics) -> None:
    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.3"}
    app_id = f"tw-{isolated_topics.prefix}"
    changelog = f"{app_id}-scope-state-changelog"
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    good, bad = calls(AGENT, 150), flags(AGENT, 30)
    want = {e["event_id"] for e in good + bad}
    try:
        producer.send_batch(AGENT, good[:100])
        producer.send_batch(AGENT, bad)
        producer.send_batch(AGENT, good[100:])
        producer.flush()
        wait_for(lambda: w1.metric("tripwire_events_total") == 180, 20, "180 events counted")
        rate = w1.metric("tripwire_near_miss_rate", agent=AGENT, tool="*", window="1h")
        assert rate == pytest.approx(30 / 150)
        wait_for(lambda: (lambda ids, agents: want <= ids and AGENT in agents)(*checkpointed_ids(broker.bootstrap,
                                                                                                    changelog)),
                 20, "the dedupe checkpoint and the agent checkpoint in the changelog")
        kill9(w1.proc)  # no final commit, no final checkpoint
    finally:
        stop_process(w1.proc)

    w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    try:
        # whatever was redelivered (offsets not committed yet) was recognised; ready is not the end of the
        # redelivery (a loaded CI box read the count mid-way once): read it once it stops moving
        redelivered = steady(lambda: w2.metric("tripwire_events_duplicate_total"))
        assert w2.metric("tripwire_events_total") == 0
        # the producer re-sends the tool calls (a retry): all duplicates, none counted
        producer.send_batch(AGENT, good)
        producer.flush()
        wait_for(lambda: w2.metric("tripwire_events_duplicate_total") == redelivered + 150, 20,
                 "the 150 re-sent events dropped as duplicates")
        assert w2.metric("tripwire_events_total") == 0
        # the windows came back from the changelog and were not inflated (double-counted calls would halve it)
        assert w2.metric("tripwire_near_miss_rate", agent=AGENT, tool="*", window="1h") == pytest.approx(30 / 150)
        # new events are counted once
        producer.send_batch(AGENT, calls(AGENT, 10, tag="new"))
        producer.flush()
        wait_for(lambda: w2.metric("tripwire_events_total") == 10, 20, "10 new events counted")
        assert w2.metric("tripwire_near_miss_rate", agent=AGENT, tool="*", window="1h") == pytest.approx(30 / 160)
        assert "event ids for dedupe" in w2.log.read_text(errors="replace")
    finally:
        producer.close()
        stop_process(w2.proc)


def test_no_event_is_lost_when_a_worker_dies_before_its_checkpoint(broker, tmp_path, isolated_topics) -> None:
    """Offsets are committed only after the checkpoint that saved the events' effects (streams/worker/acks.py).

    With no checkpoint between the events and the kill -9 (a 60 s interval), the restarted worker
    must read the events again and count them. (With offsets committed right after processing —
    every second — they would be gone: committed, but never saved.)
    """
    import time

    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "60"}
    app_id = f"tw-{isolated_topics.prefix}"
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    try:
        producer.send_batch("nl-agent", calls("nl-agent", 50))
        producer.send_batch("nl-agent", flags("nl-agent", 10))
        producer.flush()
        wait_for(lambda: w1.metric("tripwire_events_total") == 60, 20, "60 events counted")
        time.sleep(2.5)  # an offset committed right after processing would be committed by now
        kill9(w1.proc)
    finally:
        stop_process(w1.proc)
    w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    try:
        wait_for(lambda: w2.metric("tripwire_events_total") == 60, 30, "the 60 events read again and counted")
        assert w2.metric("tripwire_near_miss_rate", agent="nl-agent", tool="*", window="1h") == pytest.approx(10 / 50)
    finally:
        producer.close()
        stop_process(w2.proc)
