"""Broker outage: the worker reports it, keeps enforcing from memory, and comes back by itself.

A module-private broker (the session broker is shared), killed with SIGKILL and
started again on the same port. Tansu is memory-only: it comes back empty. The worker
must (1) turn ``/readyz`` 503 with the outage as the reason, (2) keep denying a scope
that was open before the outage, (3) reconnect without a restart, recreate its topics,
re-publish the breaker states it knows to the now-empty ``breaker-state`` and consume
new traces again.
"""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from helpers.faults import AuthzPoller, authz_status, calls, tripping_burst
from streams.kafka.broker import EmbeddedBroker
from streams.ops.procutil import stop_process
from streams.kafka.producer import TraceProducer
from helpers.support import Topics, consume_all, start_worker, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


def readyz(web: str) -> tuple[int, str]:
    r = httpx.get(f"{web}/readyz", timeout=2)
    return r.status_code, r.json()["reason"]


def test_broker_outage_and_empty_restart(tmp_path) -> None:
    broker = EmbeddedBroker(tmp_path / "broker")
    broker.start()
    topics = Topics(f"out-{int(time.time())}")
    w = start_worker(broker, tmp_path, topics, app_id=f"tw-{topics.prefix}",
                     extra_env={"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "0.5"})
    poller = None
    try:
        p = TraceProducer(broker.bootstrap, topics.traces)
        p.send_batch("out-bad", tripping_burst("out-bad"))
        p.send_batch("out-calm", calls("out-calm", 30))
        p.close()
        wait_for(lambda: authz_status(w.web, "out-bad") == 403, 30, "out-bad open")
        assert authz_status(w.web, "out-calm") == 200
        poller = AuthzPoller(w.web, [("out-bad", "shell")], interval_s=0.05)
        poller.start()

        broker.kill()
        wait_for(lambda: readyz(w.web)[0] == 503, 20, "/readyz to report the outage")
        status, reason = readyz(w.web)
        assert "broker unreachable" in reason, reason
        # authz keeps answering from the last known state, for open and closed scopes
        assert authz_status(w.web, "out-bad") == 403
        assert authz_status(w.web, "out-calm") == 200
        assert w.metric("tripwire_worker_ready") == 0

        broker.start()  # same port, empty (memory-only)
        wait_for(lambda: readyz(w.web)[0] == 200, 60, "the worker ready again without a restart")
        # it recreated its topics and re-published what it knew to the empty breaker-state
        recs = consume_all(broker.bootstrap, topics.breaker_state, 1, timeout=20)
        states = {r.key.decode(): orjson.loads(r.value)["state"] for r in recs}
        assert states.get("agent:out-bad") == "open", states
        # and consumes new traces
        before = w.metric("tripwire_events_total")
        p = TraceProducer(broker.bootstrap, topics.traces)
        p.send_batch("out-new", calls("out-new", 10))
        p.close()
        wait_for(lambda: w.metric("tripwire_events_total") >= before + 10, 90, "new events consumed")
        poller.stop()
        assert poller.polls > 20 and poller.allowed == [], poller.allowed[:5]
        assert authz_status(w.web, "out-bad") == 403
        log = w.log.read_text(errors="replace")
        assert "re-published" in log and "broker answering again" in log
    finally:
        if poller is not None:
            poller.stop()
        stop_process(w.proc)
        broker.stop()
