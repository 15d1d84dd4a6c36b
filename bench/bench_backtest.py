"""`tripwire backtest` throughput: in-process and the whole command (start-up included).

Run: ``python bench/bench_backtest.py [--events 300000] [--agents 340] [--profile]``. Generates a
recorded-traces file with a fixed seed (one event per JSONL line, 6 h of event time, a mix of
tool calls, LLM calls, low-severity flags, errors; a few agents misbehave for a while so breakers
trip and recover), then times :func:`streams.ops.backtest.backtest` in-process and
``python -m streams.cli backtest --json`` as a subprocess on it.

Prints one machine-readable line ``BENCH_BACKTEST backtest_events_per_s=… backtest_cli_events_per_s=… …``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson

#: event time of the first generated event (fixed: the file and its report never depend on today)
BASE_TS = 1_790_000_000.0
TOOLS = ("search", "db.query", "email.send", "http.fetch", "code.exec", "shell", "payments.refund")


def generate(path: Path, n: int = 300_000, agents: int = 340, span_s: float = 6 * 3600.0, seed: int = 19) -> None:
    """Write ``n`` events of ``agents`` agents over ``span_s`` seconds of event time to ``path`` (JSONL)."""
    rng = random.Random(seed)
    ids = [f"bt-agent-{i:03d}" for i in range(agents)]
    bad = set(ids[:: max(1, agents // 12)])  # ~12 agents go wrong between 1/3 and 1/2 of the file
    lo, hi = BASE_TS + span_s / 3, BASE_TS + span_s / 2
    with path.open("wb") as fh:
        for i in range(n):
            agent = ids[rng.randrange(agents)]
            ts = BASE_TS + i * span_s / n
            ev: dict[str, object] = {"schema_version": "1", "event_id": f"bt{seed}-{i}", "ts": int(ts * 1000),
                                     "agent_id": agent, "tenant": f"t{int(agent[-3:]) % 3}", "task_id": f"{agent}:{i // 2000}",
                                     "attempt": 1}
            wrong = agent in bad and lo <= ts < hi
            r = rng.random()
            if r < 0.62:
                err = rng.random() < (0.4 if wrong else 0.02)
                ev.update(kind="tool_call", tool=rng.choice(TOOLS), status="error" if err else "ok",
                          latency_ms=round(rng.uniform(5, 300), 1), cost_usd=0.001)
            elif r < 0.9:
                ev.update(kind="llm_call", model="m", input_tokens=500, output_tokens=100, latency_ms=400.0,
                          cost_usd=0.002)
            elif r < 0.97 or not wrong:
                ev.update(kind="monitor_flag", tool=rng.choice(TOOLS), severity="medium" if wrong else "low",
                          monitor="guard", action="warned")
            else:
                ev.update(kind="incident", tool=rng.choice(TOOLS), severity="critical")
            fh.write(orjson.dumps(ev) + b"\n")


def time_inprocess(path: Path, profile: bool = False) -> tuple[float, dict]:
    """(seconds, report dict) of one in-process backtest with the default policy.

    The report dict gets ``_engine``: scope evaluations settled by the batch screen and run exactly.
    """
    import streams.ops.backtest as bt
    from breakers.policy import load_policy
    from streams.ops.backtest import backtest
    from streams.settings import DEFAULT_POLICY

    policy = load_policy(DEFAULT_POLICY)
    made: list = []
    real = bt.Monitor
    exact = [0]

    def keep(*args, **kwargs):  # the engine's counters, read after the run
        m = real(*args, **kwargs)
        inner = m._evaluate_scope

        def counted(*a, **k):
            exact[0] += 1
            return inner(*a, **k)

        m._evaluate_scope = counted
        made.append(m)
        return m

    bt.Monitor = keep
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        report = backtest(policy, path)
        prof.disable()
        dt = time.perf_counter() - t
        pstats.Stats(prof).sort_stats("tottime").print_stats(22)
    else:
        t = time.perf_counter()
        report = backtest(policy, path)
        dt = time.perf_counter() - t
    bt.Monitor = real
    return dt, report.to_dict() | {"_engine": {"screened": made[0].screened, "exact": exact[0]}}


def time_ingest_only(path: Path) -> float:
    """Seconds of the same replay without evaluation: decode + ``Monitor.ingest`` of every event (the same-run baseline)."""
    import math as _math

    from breakers.policy import load_policy
    from streams.engine.clock import EventClock
    from streams.engine.monitor import Monitor
    from streams.engine.tuning import EngineTuning
    from streams.ops.backtest import BacktestReport, read_events, replay_gc
    from streams.settings import DEFAULT_POLICY

    policy = load_policy(DEFAULT_POLICY)
    t = time.perf_counter()
    with replay_gc():  # read (and GC settings) as the backtest reads
        events = read_events(path, BacktestReport("", path.name, 10.0))
        now = [events[0].ts]
        monitor = Monitor(policy, clock=EventClock(wall=lambda: now[0]), simulate_gateway=True,
                          tuning=EngineTuning(eval_budget_s=_math.inf), figures=False)
        for ev in events:
            now[0] = max(now[0], ev.ts)
            monitor.ingest(0, [ev], attested=True)
    return time.perf_counter() - t


def time_cli(path: Path, out: Path) -> float:
    """Wall seconds of ``python -m streams.cli backtest --traces path --json out`` (interpreter start-up included)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "streams.cli", "backtest", "--traces", str(path), "--json", str(out)],
                   check=True, cwd=str(ROOT), stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--agents", type=int, default=340)
    ap.add_argument("--profile", action="store_true", help="print the cProfile top entries of the in-process run")
    ap.add_argument("--keep", type=Path, help="write the generated file here (and keep it)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tripwire-bt-") as tmp:
        path = args.keep or Path(tmp) / "traces.jsonl"
        if not path.exists():
            generate(path, args.events, args.agents)
        dt, doc = time_inprocess(path, args.profile)
        engine = doc.pop("_engine")
        events = doc["events"]
        print(f"[backtest] in-process: {events} events of {args.agents} agents in {dt:.2f}s = {events / dt:,.0f} "
              f"events/s; {len(doc['transitions'])} transitions; scope evaluations: {engine['screened']:,} settled "
              f"by the batch screen, {engine['exact']:,} exact", flush=True)
        base = time_ingest_only(path)
        print(f"[backtest] same replay without evaluation (decode + Monitor.ingest only): {events / base:,.0f} events/s; "
              f"evaluation takes {1 - base / dt:.0%} of the backtest", flush=True)
        wall = time_cli(path, Path(tmp) / "report.json")
        same = orjson.loads((Path(tmp) / "report.json").read_bytes()) == doc
        print(f"[backtest] whole command (python -m streams.cli backtest --json): {wall:.2f}s = {events / wall:,.0f} "
              f"events/s (report identical to the in-process one: {same})", flush=True)
        print(f"BENCH_BACKTEST backtest_events_per_s={events / dt:.0f} backtest_cli_events_per_s={events / wall:.0f} "
              f"backtest_ingest_only_events_per_s={events / base:.0f} backtest_events={events} "
              f"backtest_transitions={len(doc['transitions'])} backtest_screened={engine['screened']} "
              f"backtest_exact={engine['exact']}", flush=True)


if __name__ == "__main__":
    main()
