"""Two workers in one consumer group; kill -9 one mid-stream; the survivor takes over without a gap.

Each agent's detector state lives on the worker holding its partition; every worker
reads all of ``breaker-state``. After the kill the survivor (once the 10 s session
timeout expired) gets the dead worker's partitions, recovers their detector windows
from the scope-state changelog (nothing is re-sent), and — polled every 20 ms all
along — never allows a scope that was open. The failover time (kill → survivor ready
holding all partitions) is printed for docs/operations.md.
"""

from __future__ import annotations

import threading
import time

import pytest

from helpers.faults import AuthzPoller, authz_status, calls, flags, kill9, tripping_burst
from streams.ops.procutil import stop_process
from streams.kafka.producer import TraceProducer
from helpers.support import start_worker, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

BAD = [f"fo-bad-{i}" for i in range(6)]
CALM = [f"fo-calm-{i}" for i in range(6)]


def owned(w, agents: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    text = w.metrics_text()
    return [a for a in agents if f'agent="{a}"' in text]


def assigned_lines(w) -> int:  # type: ignore[no-untyped-def]
    return w.log.read_text(errors="replace").count("assigned 4 partitions of")


def test_kill9_failover_keeps_open_scopes_denied(broker, tmp_path, isolated_topics) -> None:
    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.5"}
    app_id = f"tw-{isolated_topics.prefix}"
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env, wait_ready=False)
    w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    stop_bg = threading.Event()
    try:
        wait_for(lambda: all(x.metric("tripwire_worker_ready") == 1 for x in (w1, w2)), 60, "both workers ready")
        for agent in BAD:
            producer.send_batch(agent, tripping_burst(agent))
        for i, agent in enumerate(CALM):
            producer.send_batch(agent, calls(agent, 100) + flags(agent, 5 + i))
        producer.flush()
        # every worker denies every open scope (breaker-state is read by all)
        for w in (w1, w2):
            for agent in BAD:
                wait_for(lambda: authz_status(w.web, agent) == 403, 30, f"{agent} denied on {w.web}")
        wait_for(lambda: sorted(owned(w1, BAD + CALM) + owned(w2, BAD + CALM)) == sorted(BAD + CALM), 20,
                 "each agent's windows on exactly one worker")
        split = {w.port: owned(w, BAD + CALM) for w in (w1, w2)}
        assert not set(split[w1.port]) & set(split[w2.port])
        victim, survivor = (w1, w2) if len(split[w1.port]) >= len(split[w2.port]) else (w2, w1)
        moved = split[victim.port]
        before = {a: victim.metric("tripwire_near_miss_rate", agent=a, tool="*", window="1h") for a in moved}
        time.sleep(1.5)  # a few checkpoint intervals after the last event

        def background() -> None:  # mid-stream: ok traffic for other agents keeps flowing
            p = TraceProducer(broker.bootstrap, isolated_topics.traces)
            i = 0
            while not stop_bg.wait(0.1):
                p.send_batch(f"fo-bg-{i % 8}", calls(f"fo-bg-{i % 8}", 20, tag=f"b{i}-"))
                i += 1
            p.close()

        bg = threading.Thread(target=background, daemon=True)
        bg.start()
        poller = AuthzPoller(survivor.web, [(a, "shell") for a in BAD] + [(a, "search") for a in BAD])
        poller.start()
        seen_assignments = assigned_lines(survivor)
        time.sleep(0.5)

        t_kill = time.monotonic()
        kill9(victim.proc)
        wait_for(lambda: assigned_lines(survivor) > seen_assignments, 40, "the survivor to get all 4 partitions")
        t_assigned = time.monotonic()
        wait_for(lambda: survivor.metric("tripwire_worker_ready") == 1, 40, "the survivor ready again")
        t_ready = time.monotonic()
        # the dead worker's agents' windows, recovered from the changelog without re-sending anything
        wait_for(lambda: set(moved) <= set(owned(survivor, moved)), 20, "moved agents' windows on the survivor")
        after = {a: survivor.metric("tripwire_near_miss_rate", agent=a, tool="*", window="1h") for a in moved}
        assert after == pytest.approx(before)
        for a in moved:
            if a.startswith("fo-calm-"):
                assert after[a] > 0
        time.sleep(1.0)
        poller.stop()
        assert poller.polls > 100, "the poller barely ran"
        assert poller.allowed == [], f"open scopes were allowed during failover: {poller.allowed[:5]}"
        for agent in BAD:
            assert authz_status(survivor.web, agent) == 403
        print(f"\nFAILOVER kill->assigned {t_assigned - t_kill:.1f}s kill->ready {t_ready - t_kill:.1f}s "
              f"({len(moved)} agents moved, {poller.polls} authz polls, 0 allowed)")
    finally:
        stop_bg.set()
        producer.close()
        for w in (w1, w2):
            stop_process(w.proc)
