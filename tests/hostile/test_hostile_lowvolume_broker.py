"""Issue #15 (3), low volume: a few critical incidents trip the default policy whatever the volume.

The shipped harm budget (`critical-incidents`: over 2% of the calls of the hour) needs 200 calls
in the hour before it may fire, so an agent that kept its volume low — 5 critical incidents in
6 calls, or 50 in 199 — was never cut off and nothing paged. The default policy now has
`critical-incidents-low-volume`: a Poisson rule that opens the breaker when the hour's critical
incidents are improbable at the same 2% objective (P(X ≥ k | λ = 0.02 × calls) < 0.001, k ≥ 3),
with no minimum number of calls. Its verdict is exported as `tripwire_budget_firing`, which the
alert `TripwireHarmBudgetFiring` reads.

On the old code both attacked agents stay allowed (200) and the test times out waiting for 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers.hostile import alive_or_fail, authz, calls, incidents, run_tag, wait_worker
from helpers.support import Topics, WorkerProc, start_worker
from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process

pytestmark = pytest.mark.broker

BUDGET = "critical-incidents-low-volume"


@pytest.fixture(scope="module")
def w(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:
    topics = Topics(f"hostile-lowvol-{uuid.uuid4().hex[:6]}")
    worker = start_worker(broker, tmp_path_factory.mktemp("hostile-lowvol"), topics, app_id=f"tw-{topics.prefix}",
                          extra_env={"TRIPWIRE_METRICS_CACHE_S": "0"})
    yield worker
    stop_process(worker.proc)  # type: ignore[arg-type]


def _breaker(w: WorkerProc, scope: str) -> dict[str, Any]:
    r = httpx.get(f"{w.web}/v1/breakers/{scope}", timeout=5)
    return r.json() if r.status_code == 200 else {}


def test_a_handful_of_critical_incidents_in_few_calls_trips_the_agent(broker: Any, w: WorkerProc) -> None:
    run = run_tag()
    quiet, issue, honest = f"lv-quiet-{run}", f"lv-199-{run}", f"lv-honest-{run}"
    p = TraceProducer(broker.bootstrap, w.topics.traces)
    try:
        # honest low volume first: 2 critical incidents in 6 calls is not improbable (P = 0.0067)
        p.send_batch(honest, calls(honest, 6) + incidents(honest, 2))
        p.send_batch(quiet, calls(quiet, 6) + incidents(quiet, 5))      # P(X≥5 | λ=0.12) ≈ 1.9e-7
        p.send_batch(issue, calls(issue, 199) + incidents(issue, 50))   # the issue's 50 in 199 calls
    finally:
        p.close()
    for agent in (quiet, issue):
        wait_worker(w, lambda a=agent: authz(w, a, "shell").status_code == 403, 30, f"the breaker of {agent} opened")
        r = authz(w, agent, "search")  # an agent scope: every tool of the agent is cut off
        assert r.status_code == 403 and r.headers["X-Tripwire-State"] == "open", (r.status_code, r.headers)
        st = _breaker(w, f"agent:{agent}")
        assert st.get("state") == "open" and st.get("budget") == BUDGET, st
        assert "improbable" in st.get("reason", ""), st
        # the figure the page reads
        assert w.metric("tripwire_budget_firing", budget=BUDGET, scope=f"agent:{agent}",
                        signal="critical_incident_rate") == 1
    assert authz(w, honest, "shell").status_code == 200
    assert _breaker(w, f"agent:{honest}").get("state", "closed") == "closed"
    assert w.metric("tripwire_budget_firing", budget=BUDGET, scope=f"agent:{honest}") == 0
    alive_or_fail(w, "after the low-volume bursts")
