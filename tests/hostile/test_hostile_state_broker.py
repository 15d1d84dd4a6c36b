"""Issue #13, evaluation guard: a scope that cannot be evaluated never stops the worker.

Once trace ids are validated at decode time, the other way an unparseable scope reaches the
evaluation loop is the compacted ``breaker-state`` topic, which every worker reads from the
beginning at start: a record whose scope the grammar refuses (written by another version,
a tool, or by hand) used to be loaded into the breaker states, and every non-closed state is
evaluated on each tick. No worker writes such a record, so it is ignored (logged) when read; it
must not crash the worker and, since the record stays in the compacted topic, not crash-loop
every worker that starts after it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from helpers.hostile import alive_or_fail, authz, run_tag, tripping_burst, wait_worker
from streams.kafka.producer import TraceProducer
from helpers.support import WorkerProc

pytestmark = pytest.mark.broker

#: scopes the grammar refuses, as they could sit in breaker-state
BAD_SCOPES = ["agent:bad\x01{run}", "agent:x-{run}/tool:y/tool:z", "tenant:a-{run}/b/agent:c", "bogus-{run}",
              "tool:\x1b[2J{run}"]


def _record(scope: str, state: str, now: float) -> bytes:
    return orjson.dumps({"scope": scope, "state": state, "since": now, "updated_at": now, "reason": "hostile",
                         "actor": "somebody", "schema": 1})


def _listed(w: WorkerProc) -> set[str]:
    r = httpx.get(f"{w.web}/v1/breakers", timeout=5)
    return {item["scope"] for item in r.json()["breakers"]} if r.status_code == 200 else set()


def test_unparseable_scopes_in_breaker_state_do_not_stop_the_worker(broker: Any, worker: WorkerProc) -> None:
    w = worker
    run = run_tag()
    victim, trip = f"st-victim-{run}", f"st-trip-{run}"
    bad = [s.replace("{run}", run) for s in BAD_SCOPES]
    now = time.time()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        for scope in bad:
            producer.send(w.topics.breaker_state, key=scope.encode(), value=_record(scope, "open", now))
        # and an operator's reset of one of them (a reset record makes the reader take a reset baseline)
        producer.send(w.topics.breaker_state, key=bad[3].encode(),
                      value=_record(bad[3], "closed", now + 1).replace(b'"somebody"', b'"ann"'))
        producer.send(w.topics.breaker_state, key=f"agent:{victim}".encode(),
                      value=_record(f"agent:{victim}", "forced_open", now))
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)
    # the valid record sent after them is applied: the reader went past the bad ones
    wait_worker(w, lambda: f"agent:{victim}" in _listed(w), 30, "the breaker-state records read")
    assert not set(bad) & _listed(w)  # ignored, not loaded
    assert authz(w, victim, "shell").status_code == 403

    # cross-agent scopes (and scopes of no agent, like the bad ones) are evaluated by the decider only
    wait_worker(w, lambda: w.metric("tripwire_cross_scope_decider") == 1, 30, "the worker deciding cross-agent scopes")
    # evaluation ticks run with the bad scopes among the non-closed states: the worker keeps deciding
    p = TraceProducer(broker.bootstrap, w.topics.traces)
    p.send_batch(trip, tripping_burst(trip))
    p.close()
    wait_worker(w, lambda: authz(w, trip, "shell").status_code == 403, 30, f"the breaker of {trip} opened")
    assert authz(w, f"st-good-{run}", "shell").status_code == 200
    assert httpx.get(f"{w.web}/readyz", timeout=5).status_code == 200
    alive_or_fail(w, "with unparseable scopes in breaker-state")
