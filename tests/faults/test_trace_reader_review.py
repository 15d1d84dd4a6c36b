"""Adversarial review of the trace reader (commit 2855f9f) on a real broker."""

from __future__ import annotations

import orjson
import pytest
from helpers.faults import calls, committed, event, kill9
from helpers.support import consume_all, start_worker, wait_for

from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process

pytestmark = pytest.mark.broker

AGENTS = [f"rv-agent-{i}" for i in range(8)]


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


JOIN_AGENTS = [f"rj-agent-{i}" for i in range(8)]
#: one-event messages per agent (and ~1/3 more flags) in the backlog
BACKLOG = 4_000


def _produce(bootstrap: str, topic: str, n_per_agent: int, tag: str, until=None) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    """One event per message, interleaved over the agents; agent i flags every (i + 3)th call.
    Returns per agent (calls, flags) sent. With ``until`` (an Event), goes on past ``n_per_agent`` until it is set."""
    import itertools

    from helpers.faults import event as ev_

    producer = TraceProducer(bootstrap, topic)
    sent: dict[str, list[int]] = {a: [0, 0] for a in JOIN_AGENTS}
    try:
        for n in itertools.count():
            if n >= n_per_agent and (until is None or until.is_set()):
                break
            for i, agent in enumerate(JOIN_AGENTS):
                if n % (i + 3) == 0:
                    producer.send_batch(agent, [ev_(agent, f"{agent}-{tag}f{n}", "monitor_flag", tool="shell",
                                                    severity="high", monitor="guard", action="blocked")])
                    sent[agent][1] += 1
                producer.send_batch(agent, [ev_(agent, f"{agent}-{tag}c{n}")])
                sent[agent][0] += 1
        producer.flush()
    finally:
        producer.close()
    return {a: (c, f) for a, (c, f) in sent.items()}


def _stable(read, what: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    """Wait until ``read()`` returns the same value twice 1 s apart; return it."""
    import time

    last = object()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if value == last:
            return value
        last = value
        time.sleep(1.0)
    raise AssertionError(f"{what} never settled (last {last})")


def test_a_worker_joining_mid_backlog_neither_loses_nor_recounts_an_event(broker, tmp_path, isolated_topics) -> None:
    """A backlog of one-event messages is being read when a second worker joins: the first is paused mid-batch
    (in one of its 20 ms yields), checkpoints and commits, and the newcomer starts exactly there. Summed over
    both workers every event is counted once (nothing re-counted, nothing skipped), and each agent's windows, on
    whichever worker holds it, have exactly what was sent."""
    import threading

    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.5"}
    app_id = f"tw-{isolated_topics.prefix}"
    first = _produce(broker.bootstrap, isolated_topics.traces, BACKLOG, "a")  # the backlog, before any worker
    sent: dict[str, tuple[int, int]] = {}
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env, wait_ready=False)
    w2 = None
    try:
        wait_for(lambda: w1.metric("tripwire_events_total") > 0, 90, "w1 reading the backlog")
        done = threading.Event()  # traffic flows all through the rebalance: w1 is mid-batch when it is paused
        t = threading.Thread(target=lambda: sent.update(_produce(broker.bootstrap, isolated_topics.traces, 500, "b",
                                                                 until=done)))
        t.start()
        try:
            w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env, wait_ready=False)
            wait_for(lambda: all(w.metric("tripwire_worker_ready") == 1 for w in (w1, w2)), 90, "both workers ready")
            wait_for(lambda: w2.metric("tripwire_events_total") > 1000, 30, "w2 reading")
        finally:
            done.set()
            t.join()
        total = sum(c + f for c, f in first.values()) + sum(c + f for c, f in sent.values())

        def counts() -> tuple[float, float]:
            return (sum(w.metric("tripwire_events_total") for w in (w1, w2)),
                    sum(w.metric("tripwire_events_duplicate_total") for w in (w1, w2)))

        wait_for(lambda: counts()[0] + counts()[1] >= total, 60, f"{total} events seen")
        events, dups = _stable(counts, "the event counters")
        assert w1.log.read_text(errors="replace").count("assigned 2 partitions") >= 1, "no rebalance happened"
        print(f"\nw1 counted {w1.metric('tripwire_events_total'):.0f}, w2 {w2.metric('tripwire_events_total'):.0f}")
        assert (events, dups) == (total, 0), f"events {events} + duplicates {dups}, sent {total}"
        for agent in JOIN_AGENTS:
            calls_n = first[agent][0] + sent[agent][0]
            flags_n = first[agent][1] + sent[agent][1]
            rate = sum(w.metric("tripwire_near_miss_rate", agent=agent, tool="*", window="1h") for w in (w1, w2))
            assert rate == pytest.approx(flags_n / calls_n), agent
    finally:
        for w in (w1, w2):
            if w is not None:
                stop_process(w.proc)


def _assigned(w, n: int) -> int:  # type: ignore[no-untyped-def]
    return w.log.read_text(errors="replace").count(f"assigned {n} partitions of")


def _rates(w, sent):  # type: ignore[no-untyped-def]
    return {a: round(w.metric("tripwire_near_miss_rate", agent=a, tool="*", window="1h"), 9) for a in sent}


def _check_exact(w, sent, phase: str) -> None:  # type: ignore[no-untyped-def]
    expected = {a: round(f / c, 9) for a, (c, f) in sent.items()}
    try:
        wait_for(lambda: _rates(w, sent) == expected, 60, f"{phase}: every agent's windows complete")
    except AssertionError:
        got = _rates(w, sent)
        diff = {a: (got[a], expected[a], sent[a]) for a in sent if got[a] != expected[a]}
        raise AssertionError(f"{phase}: near-miss rates (got, expected, (calls, flags) sent): {diff}; "
                             f"events {w.metric('tripwire_events_total')} dups "
                             f"{w.metric('tripwire_events_duplicate_total')}") from None
    assert _stable(lambda: _rates(w, sent), "the near-miss rates") == expected


def _merge(total: dict, more: dict) -> None:  # type: ignore[type-arg]
    for a, (c, f) in more.items():
        c0, f0 = total.get(a, (0, 0))
        total[a] = (c0 + c, f0 + f)


def test_a_graceful_leave_under_traffic_keeps_every_agent_exact(broker, tmp_path, isolated_topics) -> None:
    """One-event traffic flows while w2 leaves gracefully (SIGTERM): w1 ends with every partition and each
    agent's windows hold exactly what was sent (a lost or doubled call or flag moves the near-miss rate)."""
    import threading

    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.5"}
    app_id = f"tw-{isolated_topics.prefix}"
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env, wait_ready=False)
    w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    sent: dict[str, tuple[int, int]] = {}
    done = threading.Event()
    t = threading.Thread(target=lambda: sent.update(_produce(broker.bootstrap, isolated_topics.traces, 200, "x",
                                                             until=done)))
    try:
        wait_for(lambda: all(w.metric("tripwire_worker_ready") == 1 for w in (w1, w2)), 90, "both workers ready")
        t.start()
        try:
            wait_for(lambda: w2.metric("tripwire_events_total") > 2000, 30, "w2 reading")
            n4 = _assigned(w1, 4)
            stop_process(w2.proc)  # graceful leave
            wait_for(lambda: _assigned(w1, 4) > n4, 60, "w1 holding all partitions")
            wait_for(lambda: w1.metric("tripwire_worker_ready") == 1, 60, "w1 ready")
            wait_for(lambda: w1.metric("tripwire_events_total") > 0, 10, "w1 reading")
        finally:
            done.set()
            t.join()
        _check_exact(w1, sent, "after w2 left")
    finally:
        for w in (w1, w2):
            stop_process(w.proc)


def test_a_kill9_right_after_a_join_under_traffic_keeps_every_agent_exact(broker, tmp_path, isolated_topics) -> None:
    """One-event traffic flows while w2 joins and w1 is killed -9 right after that rebalance: w2 ends with every
    partition and each agent's windows hold exactly what was sent."""
    import threading

    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.5"}
    app_id = f"tw-{isolated_topics.prefix}"
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    w2 = None
    sent: dict[str, tuple[int, int]] = {}
    done = threading.Event()
    t = threading.Thread(target=lambda: sent.update(_produce(broker.bootstrap, isolated_topics.traces, 200, "y",
                                                             until=done)))
    try:
        t.start()
        try:
            wait_for(lambda: w1.metric("tripwire_events_total") > 2000, 30, "w1 reading")
            n2 = _assigned(w1, 2)
            w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env, wait_ready=False)
            wait_for(lambda: _assigned(w1, 2) > n2, 60, "the rebalance w2 causes")
            kill9(w1.proc)  # right after the rebalance
            wait_for(lambda: _assigned(w2, 4) > 0, 60, "w2 holding all partitions")
            wait_for(lambda: w2.metric("tripwire_worker_ready") == 1, 60, "w2 ready")
        finally:
            done.set()
            t.join()
        _check_exact(w2, sent, "after w1 was killed")
    finally:
        for w in (w1, w2):
            if w is not None:
                stop_process(w.proc)


def test_leave_join_and_kill9_after_a_rebalance_under_traffic_keep_every_agent_exact(
        broker, tmp_path, isolated_topics) -> None:
    """One-event traffic flows all along while the group changes: w2 leaves gracefully (SIGTERM), w3 joins, and
    w1 is killed -9 right after that rebalance. w3 ends with every partition: each agent's windows must hold
    exactly what was sent (a lost or doubled call or flag moves the near-miss rate)."""
    import threading

    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.5"}
    app_id = f"tw-{isolated_topics.prefix}"
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env, wait_ready=False)
    w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    w3 = None
    sent: dict[str, tuple[int, int]] = {}
    done = threading.Event()
    t = threading.Thread(target=lambda: sent.update(_produce(broker.bootstrap, isolated_topics.traces, 200, "x",
                                                             until=done)))
    try:
        wait_for(lambda: all(w.metric("tripwire_worker_ready") == 1 for w in (w1, w2)), 90, "both workers ready")
        t.start()
        try:
            wait_for(lambda: w2.metric("tripwire_events_total") > 2000, 30, "w2 reading")
            n4 = _assigned(w1, 4)
            stop_process(w2.proc)  # graceful leave
            wait_for(lambda: _assigned(w1, 4) > n4, 60, "w1 holding all partitions")
            wait_for(lambda: w1.metric("tripwire_worker_ready") == 1, 60, "w1 ready")
            n2 = _assigned(w1, 2)
            w3 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env, wait_ready=False)
            wait_for(lambda: _assigned(w1, 2) > n2, 60, "the rebalance w3 causes")
            kill9(w1.proc)  # right after the rebalance
            wait_for(lambda: _assigned(w3, 4) > 0, 60, "w3 holding all partitions")
            wait_for(lambda: w3.metric("tripwire_worker_ready") == 1, 60, "w3 ready")
        finally:
            done.set()
            t.join()
        _check_exact(w3, sent, "after w2 left, w3 joined and w1 was killed")
    finally:
        for w in (w1, w2, w3):
            if w is not None:
                stop_process(w.proc)


def test_a_graceful_stop_checkpoints_and_commits_where_processing_stopped(broker, tmp_path, isolated_topics) -> None:
    """SIGTERM is the graceful leave. faust skips the revoke hook once it is stopping, so without a checkpoint of its
    own at shutdown the worker leaves everything since its last periodic checkpoint uncommitted, and a checkpoint
    the stop cut short (records flushed, its closing marker not) for the next owner to recover. With a checkpoint
    interval far longer than the test, the stop itself must checkpoint and commit to the end of every partition."""
    import os
    import signal
    import subprocess

    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "600"}
    app_id = f"tw-{isolated_topics.prefix}"
    w = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    try:
        for agent in AGENTS:
            for ev in calls(agent, 50):
                producer.send_batch(agent, [ev])
        producer.flush()
        sent = 50 * len(AGENTS)
        wait_for(lambda: w.metric("tripwire_events_total") == sent, 30, "events counted")
        os.killpg(w.proc.pid, signal.SIGTERM)
        try:
            w.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not stop on SIGTERM:\n{w.log_tail(30)}") from None
        ends: dict[int, int] = {}
        for rec in consume_all(broker.bootstrap, isolated_topics.traces, sent):
            ends[rec.partition] = max(ends.get(rec.partition, 0), rec.offset + 1)
        assert committed(broker.bootstrap, app_id, isolated_topics.traces) == ends
    finally:
        producer.close()
        stop_process(w.proc)
