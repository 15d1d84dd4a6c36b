"""τ-bench airline traces through the real pipeline give the known Reliability@K and pass^K."""

from __future__ import annotations

import pytest

from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process
from streams.ops.replay import replay_file
from helpers.support import shared_data, start_worker, wait_for

pytestmark = pytest.mark.broker

PASS_AT = {1: 0.42, 2: 0.5667, 3: 0.66, 4: 0.72}
PASS_HAT = {1: 0.42, 2: 0.2733, 3: 0.22, 4: 0.20}


def test_taubench_pass_at_k_through_broker_and_worker(broker, tmp_path, isolated_topics) -> None:
    tau = shared_data("taubench-airline-trace-v1.jsonl")
    w = start_worker(broker, tmp_path, isolated_topics, app_id=f"tw-{isolated_topics.prefix}",
                     extra_env={"TRIPWIRE_METRICS_CACHE_S": "0"})
    try:
        producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
        stats = replay_file(tau, producer, batch=25)
        producer.close()
        assert stats.events == 1364
        wait_for(lambda: w.metric("tripwire_events_total") >= 1364, 60, "all τ-bench events counted")
        assert w.metric("tripwire_events_rejected_total") == 0
        for k, want in PASS_AT.items():
            assert round(w.metric("tripwire_reliability_at_k", agent="gpt-4o", k=str(k), shape="trial"), 4) == want, k
        for k, want in PASS_HAT.items():
            assert round(w.metric("tripwire_consistency_at_k", agent="gpt-4o", k=str(k)), 4) == want, k
    finally:
        stop_process(w.proc)
