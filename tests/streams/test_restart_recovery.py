"""Stop every worker, start again: detector windows and breaker states come back from Kafka."""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import pytest

from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process
from helpers.support import start_worker, wait_for

pytestmark = pytest.mark.broker


def _burst(agent: str, n_calls: int, n_incidents: int) -> list[dict]:
    now = int(time.time() * 1000)
    evs = [{"schema_version": "1", "event_id": f"{agent}-c{i}", "ts": now, "agent_id": agent, "kind": "tool_call",
            "tool": "shell", "status": "ok"} for i in range(n_calls)]
    evs += [{"schema_version": "1", "event_id": f"{agent}-i{i}", "ts": now, "agent_id": agent, "kind": "incident",
             "tool": "shell", "severity": "critical"} for i in range(n_incidents)]
    return evs


def _state(web: str, scope: str) -> str:
    return httpx.get(f"{web}/v1/breakers/{quote(scope, safe='')}", timeout=5).json()["state"]


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_state_survives_a_full_restart(broker, tmp_path, isolated_topics, store) -> None:
    """With the in-memory table store and with RocksDB (``TRIPWIRE_STORE=rocksdb://``, rocksdict)."""
    if store.startswith("rocksdb"):
        pytest.importorskip("rocksdict", reason="pip install 'tripwire[rocksdb]' for the RocksDB table store")
    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.5", "TRIPWIRE_STORE": store}
    app_id = f"tw-{isolated_topics.prefix}"
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    try:
        producer.send_batch("bad-agent", _burst("bad-agent", 220, 12))      # trips critical-incidents: open
        producer.send_batch("calm-agent", _burst("calm-agent", 50, 0))      # stays closed
        producer.flush()
        wait_for(lambda: _state(w1.web, "agent:bad-agent") == "open", 30, "agent:bad-agent to open")
        wait_for(lambda: w1.metric("tripwire_near_miss_rate", agent="calm-agent", tool="*", window="1h") == 0.0
                 and 'agent="calm-agent"' in w1.metrics_text(), 20, "calm-agent's windows on /metrics")
        time.sleep(1.5)  # at least two checkpoint intervals after the last event
    finally:
        stop_process(w1.proc)

    w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, port=w1.port, extra_env=env)
    try:
        # breaker state from the compacted breaker-state topic
        assert _state(w2.web, "agent:bad-agent") == "open"
        listed = httpx.get(f"{w2.web}/v1/breakers", timeout=5).json()["breakers"]
        assert any(b["scope"] == "agent:bad-agent" and b["state"] == "open" for b in listed)
        # detector windows from the scope-state changelog, without any new event
        text = w2.metrics_text()
        assert 'agent="calm-agent"' in text and 'agent="bad-agent"' in text
        assert w2.metric("tripwire_events_total") == 0  # nothing was re-consumed: offsets were committed
        # and the restored counts still drive decisions: more incidents keep it open, calm stays closed
        assert _state(w2.web, "agent:calm-agent") == "closed"
    finally:
        stop_process(w2.proc)
        producer.close()
