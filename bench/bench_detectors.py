"""Benchmark of the detectors package (pure in-process, < 60 s on a 2-core box).

Run: ``python bench/bench_detectors.py`` (from the repo root, or with the repo
on ``PYTHONPATH``). Prints human-readable lines, then one machine-readable
line ``BENCH_DETECTORS key=value ...``.

Measures updates/s per detector, the full per-event update of one scope
(RollingCounts + AgentDrift + AgentReliability, as a worker does per event),
read cost of all windows, bytes per tracked (agent, tool) scope with
tracemalloc at 100k scopes (dense rings: every bucket populated), and ADWIN's
detection delay / false alarms on a synthetic Bernoulli 0.05 -> 0.10 replay.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectors import Adwin, AgentDrift, AgentReliability, RollingCounts, detection_delay  # noqa: E402
from detectors.testing import Ev  # noqa: E402

T0 = 86400.0 * 20834
N_EVENTS = 200_000
N_SCOPES = 100_000
TARGET_EPS = 200_000
TARGET_BYTES = 4096


def make_events(n: int, seed: int = 1) -> list[Ev]:
    """Realistic mix: 70% tool calls, 18% llm calls, 6% flags, 3% refusals, ... 20 events/s."""
    rng = random.Random(seed)
    kinds = ["tool_call", "llm_call", "monitor_flag", "refusal", "escalation", "incident", "task_outcome"]
    weights = [70, 18, 6, 3, 1, 0.2, 1.8]
    tools = ["search", "book", "cancel", "refund", "lookup", "email"]
    sev = ["low", "medium", "high", "critical"]
    out = []
    t = T0
    for i in range(n):
        t += rng.expovariate(20.0)
        k = rng.choices(kinds, weights)[0]
        ts = t - (rng.random() * 30 if rng.random() < 0.05 else 0.0)  # 5% slightly out of order
        if k == "tool_call":
            e = Ev(k, ts, tool=rng.choice(tools), status="error" if rng.random() < 0.05 else "ok",
                   latency_ms=rng.lognormvariate(5, 0.6), cost_usd=0.0005)
        elif k == "llm_call":
            e = Ev(k, ts, latency_ms=rng.lognormvariate(6.5, 0.4), cost_usd=0.004,
                   input_tokens=rng.randint(300, 3000), output_tokens=rng.randint(20, 400))
        elif k == "task_outcome":
            e = Ev(k, ts, task_id=f"fam:{rng.randint(0, 3000)}", attempt=rng.randint(1, 4),
                   outcome="success" if rng.random() < 0.6 else "failure", intervened=rng.random() < 0.1)
        else:
            e = Ev(k, ts, tool=rng.choice(tools), severity=rng.choice(sev), should_refuse=(rng.random() < 0.8) if k == "refusal" else None)
        out.append(e)
    return out


def rate(fn, items, repeat: int = 3) -> float:
    """Best-of-``repeat`` items per second."""
    best = 0.0
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        fn(items)
        dt = time.perf_counter() - t
        best = max(best, len(items) / dt)
    return best


def main() -> int:
    t_start = time.perf_counter()
    res: dict[str, float] = {}
    evs = make_events(N_EVENTS)

    def run_counts(items):
        rc = RollingCounts()
        add = rc.add_event
        for e in items:
            add(e)

    xs = [random.Random(2).random() for _ in range(N_EVENTS)]

    def run_adwin(items):
        ad = Adwin()
        up = ad.update
        for x in items:
            up(x)

    def run_drift(items):
        d = AgentDrift()
        up = d.update
        for e in items:
            up(e)

    def run_rel(items):
        r = AgentReliability()
        up = r.update
        for e in items:
            up(e)

    def run_full(items):
        rc, d, r = RollingCounts(), AgentDrift(), AgentReliability()
        a, b, c = rc.add_event, d.update, r.update
        for e in items:
            a(e)
            b(e)
            c(e)

    def run_worker(items):
        # what a worker keeps for one event: agent x tool counts, agent counts, agent drift,
        # agent reliability (cross-agent scopes are summed at read time, nothing per event)
        at, ag, d, r = RollingCounts(), RollingCounts(), AgentDrift(), AgentReliability()
        for e in items:
            at.add_event(e)
            ag.add_event(e)
            d.update(e)
            r.update(e)

    res["counts_update_per_s"] = rate(run_counts, evs)
    res["adwin_update_per_s"] = rate(run_adwin, xs)
    res["drift_update_per_s"] = rate(run_drift, evs, 2)
    res["reliability_update_per_s"] = rate(run_rel, evs, 2)
    res["detector_update_events_per_s"] = rate(run_full, evs, 3)
    res["worker_event_update_per_s"] = rate(run_worker, evs, 2)

    # reads
    rc = RollingCounts()
    for e in evs:
        rc.add_event(e)
    now = evs[-1].ts
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        rc.all_windows(now)
    res["all_windows_read_us"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for _ in range(n):
        rc.window_counts(3600, now)
    res["window_read_us"] = (time.perf_counter() - t) / n * 1e6

    # memory: dense scope state (every bucket of every level non-zero) x 100k
    dense = rc.to_state()
    dense["i"] = [(k % 250) + 1 for k in range(len(dense["i"]))]
    dense["f"] = [float(k % 97) + 0.5 for k in range(len(dense["f"]))]
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    scopes = {}
    for k in range(N_SCOPES):
        scopes[f"agent:a{k // 20}/tool:t{k % 20}"] = RollingCounts.from_state(dense)
    cur, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    key_bytes = sum(sys.getsizeof(k) for k in scopes)
    dict_bytes = sys.getsizeof(scopes)
    total = cur - base
    res["bytes_per_scope"] = (total - key_bytes - dict_bytes) / N_SCOPES
    res["bytes_per_scope_with_key"] = total / N_SCOPES
    res["state_json_bytes_dense"] = float(len(__import__("json").dumps(dense, separators=(",", ":"))))
    del scopes
    gc.collect()

    # drift sensitivity (ADWIN defaults, Bernoulli 0.05 -> 0.10)
    sens = detection_delay(p0=0.05, p1=0.10, n_before=20_000, n_after=5_000, trials=10, seed=0)
    res["adwin_false_alarms_per_10k"] = sens.false_alarms_per_10k
    res["adwin_delay_median_events"] = float(sens.median_delay or -1)
    res["adwin_delay_p90_events"] = float(sens.p90_delay or -1)
    res["adwin_missed"] = float(sens.missed)
    res["bench_seconds"] = time.perf_counter() - t_start

    print("detectors benchmark (python %s, %d events)" % (sys.version.split()[0], N_EVENTS))
    print(f"  RollingCounts.add_event      {res['counts_update_per_s']:>12,.0f} events/s")
    print(f"  Adwin.update                 {res['adwin_update_per_s']:>12,.0f} updates/s")
    print(f"  AgentDrift.update            {res['drift_update_per_s']:>12,.0f} events/s")
    print(f"  AgentReliability.update      {res['reliability_update_per_s']:>12,.0f} events/s")
    ok = "OK" if res["detector_update_events_per_s"] >= TARGET_EPS else "BELOW TARGET"
    print(f"  full update, one scope       {res['detector_update_events_per_s']:>12,.0f} events/s  (target {TARGET_EPS:,}: {ok})")
    print(f"  worker: 2 counts+drift+rel   {res['worker_event_update_per_s']:>12,.0f} events/s")
    print(f"  all_windows() read           {res['all_windows_read_us']:>12.1f} us   window_counts(): {res['window_read_us']:.1f} us")
    ok = "OK" if res["bytes_per_scope"] <= TARGET_BYTES else "ABOVE TARGET"
    print(f"  bytes per (agent,tool) scope {res['bytes_per_scope']:>12.0f} B    (dense, {N_SCOPES:,} scopes; target {TARGET_BYTES}: {ok}); +key {res['bytes_per_scope_with_key']:.0f} B")
    print(f"  dense state JSON             {res['state_json_bytes_dense']:>12.0f} B")
    print(f"  ADWIN 0.05->0.10: false alarms/10k {sens.false_alarms_per_10k:.3f}, delay median {sens.median_delay} p90 {sens.p90_delay} events, missed {sens.missed}/{sens.trials}")
    print(f"  total {res['bench_seconds']:.1f} s")
    print("BENCH_DETECTORS " + " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
