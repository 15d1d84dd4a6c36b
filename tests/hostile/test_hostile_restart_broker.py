"""Issue #13: a poison monitor_flag must not crash-loop a restarted worker.

Before the fix, a monitor_flag whose agent id (or tool) the scope grammar refuses crashed the
worker in its evaluation loop; its offset was never committed (offsets are committed only
after the checkpoint that saved a message's effects), so every restart read the same message
again and crashed again. Here the worker is killed (-9) with the poison un-committed (no
checkpoint ran: a long checkpoint interval), and the restarted worker must read it again,
refuse it again (``invalid_id``) and go on deciding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from helpers.hostile import (INVALID_ID, alive_or_fail, authz, calls, kill9, poisoned, run_tag, tripping_burst,
                             wait_worker)
from streams.ops.procutil import stop_process
from streams.kafka.producer import TraceProducer
from helpers.support import Topics, consume_all, start_worker

pytestmark = pytest.mark.broker


def test_poison_monitor_flag_does_not_crash_loop_a_restarted_worker(broker: Any, tmp_path: Path,
                                                                    isolated_topics: Topics) -> None:
    run = run_tag()
    good, trip = f"rs-good-{run}", f"rs-trip-{run}"
    # no checkpoint, hence no offset commit, before the kill: the restarted worker reads everything again
    env = {"TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_CHECKPOINT_INTERVAL_S": "600"}
    app_id = f"tw-{isolated_topics.prefix}"
    flags = [poisoned(good, "agent_id", f"rs\x1b[2J-{run}"), poisoned(good, "tool", f"rs-{run}/tool:shell"),
             poisoned(good, "agent_id", f"rs-{run}/tool:x", "incident")]
    w1 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    p = TraceProducer(broker.bootstrap, isolated_topics.traces)
    try:
        p.send_batch(good, calls(good, 5))
        for ev in flags:
            p.send_raw(ev["agent_id"].encode(), orjson.dumps(ev))
        p.send_batch(good, calls(good, 5))
        p.flush()
        wait_worker(w1, lambda: w1.metric("tripwire_events_rejected_total", reason=INVALID_ID) >= len(flags), 30,
                    "the poison flags refused as invalid_id")
        wait_worker(w1, lambda: w1.metric("tripwire_events_total") >= 10, 30, "the 10 good events counted")
        wait_worker(w1, lambda: authz(w1, good, "shell").status_code == 200, 10, "authz answering")
        alive_or_fail(w1, "after the poison")
        kill9(w1)
    finally:
        stop_process(w1.proc)  # type: ignore[arg-type]

    w2 = start_worker(broker, tmp_path, isolated_topics, app_id=app_id, extra_env=env)
    try:
        # the un-committed poison is read again, refused again: no crash, no crash loop
        wait_worker(w2, lambda: w2.metric("tripwire_events_rejected_total", reason=INVALID_ID) >= len(flags), 30,
                    "the re-read poison flags refused again")
        wait_worker(w2, lambda: w2.metric("tripwire_events_total") >= 10, 30, "the good events read again")
        # and the restarted worker still decides: more poison, and an agent whose breaker must open
        more = poisoned(trip, "tool", f"rs\x7f-{run}", "monitor_flag")
        p.send_raw(trip.encode(), orjson.dumps(more))
        p.send_batch(trip, tripping_burst(trip))
        p.flush()
        wait_worker(w2, lambda: authz(w2, trip, "shell").status_code == 403, 30, f"the breaker of {trip} opened")
        assert w2.metric("tripwire_events_rejected_total", reason=INVALID_ID) == len(flags) + 1
        assert authz(w2, good, "shell").status_code == 200
        assert httpx.get(f"{w2.web}/readyz", timeout=5).status_code == 200
        alive_or_fail(w2, "after the restart")
        letters = [orjson.loads(r.value) for r in consume_all(broker.bootstrap, isolated_topics.dlq, expect=7,
                                                              timeout=10)]
        # both workers dead-lettered the three flags (once each), the restarted one also the fourth
        assert sorted(d["reason"] for d in letters) == [INVALID_ID] * 7, letters
    finally:
        p.close()
        stop_process(w2.proc)  # type: ignore[arg-type]
