"""Memory under invented agent ids: RSS while N distinct agent ids arrive, one event each.

Drives :class:`~streams.engine.pipeline.TracePipeline` + :class:`~streams.engine.monitor.Monitor`
in-process (no broker) with keyless batches of 100 events, each event of a new agent id (the
attack of issue #15 (7)), under the default policy and engine tuning (``max_live_agents`` 10,000,
spilled agents kept as their zlib'd checkpoint). Prints RSS as it goes, the peak, and the bytes each
additional (spilled, idle) agent costs: ``(RSS at N - RSS at N/5) / (4N/5)``.

    .venv/bin/python bench/bench_memory.py --agents 1000000
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from breakers.policy import load_policy  # noqa: E402
from streams.engine.monitor import Monitor  # noqa: E402
from streams.engine.pipeline import TracePipeline  # noqa: E402
from streams.settings import DEFAULT_POLICY, Settings  # noqa: E402

#: the stated bound: RSS stays under this while 1,000,000 distinct agent ids arrive
RSS_BOUND_MB = 2048


def rss_mb() -> float:
    """Current resident set size (Linux /proc), MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run(agents: int, batch: int = 100) -> dict[str, float]:
    monitor = Monitor(load_policy(DEFAULT_POLICY))
    pipeline = TracePipeline(Settings(), sink=monitor.ingest)
    now_ms = int(time.time() * 1000)
    start = rss_mb()
    marks: dict[int, float] = {}
    peak = start
    t0 = time.perf_counter()
    fifth = agents // 5
    for b in range(0, agents, batch):
        value = orjson.dumps([{"schema_version": "1", "event_id": f"m-{i}", "ts": now_ms, "agent_id": f"inv-{i}",
                               "kind": "tool_call", "tool": "search"} for i in range(b, min(b + batch, agents))])
        pipeline.process(None, value, topic="agent-traces", partition=b // batch % 12, offset=b // batch)
        n = b + batch
        if n % fifth == 0 or n >= agents:
            gc.collect()
            marks[n] = rss = rss_mb()
            peak = max(peak, rss)
            print(f"  {n:>9,} agents  live {len(monitor.agents):>6,}  spilled {len(monitor.table.spilled):>9,}  "
                  f"RSS {rss:7.1f} MB  {time.perf_counter() - t0:6.1f} s", flush=True)
    first = min(marks)
    last = max(marks)
    per_agent = (marks[last] - marks[first]) * 2**20 / max(1, last - first)
    return {"agents": agents, "rss_start_mb": start, "rss_peak_mb": peak, "bytes_per_idle_agent": per_agent,
            "live": len(monitor.agents), "spilled": len(monitor.table.spilled), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1_000_000)
    args = ap.parse_args()
    r = run(args.agents)
    bound = RSS_BOUND_MB * args.agents / 1_000_000 if args.agents < 1_000_000 else RSS_BOUND_MB
    ok = r["rss_peak_mb"] < max(bound, 400)
    print(f"memory: {r['agents']:,} distinct agent ids -> RSS peak {r['rss_peak_mb']:.0f} MB (from "
          f"{r['rss_start_mb']:.0f} MB; bound {RSS_BOUND_MB} MB at 1M: {'ok' if ok else 'EXCEEDED'}), "
          f"{r['bytes_per_idle_agent']:.0f} B per idle agent, {r['live']:,} live, {r['spilled']:,} spilled, "
          f"{r['seconds']:.0f} s")
    print(f"BENCH memory_agents={r['agents']} rss_peak_mb={r['rss_peak_mb']:.0f} "
          f"bytes_per_idle_agent={r['bytes_per_idle_agent']:.0f}")


if __name__ == "__main__":
    main()
