"""/metrics cardinality: series count, bytes and scrape time of one worker's exposition.

Drives :class:`~streams.engine.pipeline.TracePipeline` + :class:`~streams.engine.monitor.Monitor`
in-process (no broker, simulated wall clock = the newest event time, scopes evaluated every batch
as the worker does) and renders ``/metrics`` with the worker's own families
(:mod:`streams.worker.views`, :mod:`streams.worker.metrics`). Two inputs:

* ``--agents N --tools M`` (default 1,000 × 50): synthetic traffic, every agent calling every tool
  with a few near-misses, at the default settings (label caps: 200 agents, 200 tools);
* ``--toolemu FILE --extra-agents 17``: the shipped ToolEmu file plus synthetic agents, the issue's
  "42 agents, hundreds of tools" worker, at the default settings.

Prints ``BENCH series=… bytes=… scrape_ms=… series_per_agent=…``; the documented budget is at most
6,000 series for the ToolEmu worker and at most 150 series per agent with a scrape under 100 ms at
1k agents × 50 tools (docs/metrics.md, *Series budget*).

    .venv/bin/python bench/bench_series.py
    .venv/bin/python bench/bench_series.py --toolemu ../shared/data/toolemu-trace-v1.jsonl --extra-agents 17
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from breakers.policy import load_policy  # noqa: E402
from streams.engine.clock import EventClock  # noqa: E402
from streams.engine.monitor import Monitor  # noqa: E402
from streams.engine.pipeline import TracePipeline  # noqa: E402
from streams.settings import DEFAULT_POLICY, Settings  # noqa: E402
from streams.worker.metrics import Metrics, ingest_families  # noqa: E402
from streams.worker.views import breaker_families, monitor_families  # noqa: E402

SERIES_BUDGET_TOOLEMU = 6000
SERIES_PER_AGENT_BUDGET = 150
SCRAPE_MS_BUDGET = 100.0


class SimClock:
    """The simulated wall: the newest event time seen (seconds)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def synthetic(agents: int, tools: int, calls_per_tool: int, start_ms: int, seed: int = 7,
              prefix: str = "bench-agent") -> list[dict]:
    """``calls_per_tool`` tool calls of every agent on every tool, one near-miss in 20 calls, over an hour."""
    rng = random.Random(seed)
    out = []
    n = 0
    for a in range(agents):
        for t in range(tools):
            for c in range(calls_per_tool):
                ts = start_ms + rng.randrange(3_600_000)
                base = {"schema_version": "1", "ts": ts, "agent_id": f"{prefix}-{a}", "tool": f"tool-{t}"}
                out.append({**base, "event_id": f"{prefix}-{n}", "kind": "tool_call", "status": "ok"})
                n += 1
                if rng.random() < 0.05:
                    out.append({**base, "event_id": f"{prefix}-{n}", "kind": "monitor_flag", "severity": "medium"})
                    n += 1
    return out


def feed(events: list[dict], settings: Settings, batch: int = 500) -> tuple[Monitor, TracePipeline, SimClock]:
    events.sort(key=lambda e: e["ts"] if isinstance(e["ts"], int) else 0)
    clock = SimClock(events[0]["ts"] / 1000 if isinstance(events[0]["ts"], int) else time.time())
    monitor = Monitor(load_policy(DEFAULT_POLICY), clock=EventClock(clock), max_agents=settings.max_agents,
                      max_tools=settings.max_tools)
    pipeline = TracePipeline(settings, sink=monitor.ingest)
    by_agent: dict[str, list[dict]] = {}
    for i in range(0, len(events), batch):
        chunk = events[i:i + batch]
        clock.t = max(clock.t, max(e["ts"] for e in chunk if isinstance(e["ts"], int)) / 1000 + 1)
        by_agent.clear()
        for e in chunk:
            by_agent.setdefault(e["agent_id"], []).append(e)
        for j, (agent, evs) in enumerate(by_agent.items()):
            pipeline.process(agent.encode(), orjson.dumps(evs), topic="agent-traces", partition=0, offset=i + j)
        monitor.evaluate(clock.t)
    return monitor, pipeline, clock


def scrape(monitor: Monitor, pipeline: TracePipeline, settings: Settings, repeat: int = 5,
           cached: bool = False) -> tuple[bytes, float]:
    """The exposition and the median time of a scrape, ms, wired as the worker wires it: the detector
    families are a cached source (their text rebuilt at most every ``metrics_cache_s``). Without
    ``cached`` every scrape rebuilds them (TTL 0: the scrape that finds the cache stale); with it, the
    text is built once first (a scrape inside the cache's lifetime)."""
    metrics = Metrics()
    metrics.add_source(lambda: ingest_families(pipeline.counters))
    metrics.add_cached_source(lambda: monitor_families(monitor, settings), ttl_s=3600.0 if cached else 0.0)
    metrics.add_source(lambda: breaker_families(monitor, {}))
    if cached:
        metrics.exposition()
    times = []
    body = b""
    for _ in range(repeat):
        t0 = time.perf_counter()
        body = metrics.exposition()
        times.append((time.perf_counter() - t0) * 1000)
    return body, sorted(times)[len(times) // 2]


def count_series(body: bytes) -> tuple[int, Counter[str]]:
    """Samples in an exposition, and per family (name before ``{``)."""
    per: Counter[str] = Counter()
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            per[line.split("{", 1)[0].split(" ", 1)[0]] += 1
    return sum(per.values()), per


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--tools", type=int, default=50)
    ap.add_argument("--calls-per-tool", type=int, default=2)
    ap.add_argument("--toolemu", type=Path, help="the ToolEmu trace file (JSON lines); replaces --agents/--tools")
    ap.add_argument("--extra-agents", type=int, default=17, help="synthetic agents added to --toolemu (10 tools each)")
    ap.add_argument("--top", type=int, default=8, help="families to list, largest first")
    ap.add_argument("--max-agents", type=int, default=None, help="raise the agent label cap (default: 200)")
    args = ap.parse_args(argv)
    if args.toolemu:
        events = [orjson.loads(line) for line in args.toolemu.read_bytes().splitlines() if line.strip()]
        first = min(e["ts"] for e in events if isinstance(e["ts"], int))
        events += synthetic(args.extra_agents, 10, 6, first, prefix="extra-agent")
        settings = Settings()
        label = f"toolemu+{args.extra_agents}"
    else:
        start = int(time.time() * 1000) - 3_600_000
        events = synthetic(args.agents, args.tools, args.calls_per_tool, start)
        # the default label caps (max_agents 200) unless --max-agents: what a worker runs with
        settings = Settings(**({"max_agents": args.max_agents} if args.max_agents else {}))
        label = f"{args.agents}x{args.tools}"
    agents = len({e["agent_id"] for e in events})
    tools = len({e.get("tool") for e in events if e.get("tool")})
    t0 = time.perf_counter()
    monitor, pipeline, _ = feed(events, settings)
    fed_s = time.perf_counter() - t0
    body, ms = scrape(monitor, pipeline, settings)
    _, cached_ms = scrape(monitor, pipeline, settings, cached=True)
    total, per = count_series(body)
    per_agent = total / max(1, agents)
    print(f"series: {label}: {agents} agents, {tools} tools, {len(events):,} events (fed in {fed_s:.1f} s)")
    print(f"  /metrics: {total:,} series, {len(body):,} bytes, scrape {ms:.1f} ms (families rebuilt), "
          f"{cached_ms:.1f} ms (detector families cached), {per_agent:.1f} series per agent")
    for name, n in per.most_common(args.top):
        print(f"    {n:>7,}  {name}")
    if args.toolemu:
        print(f"  budget: <= {SERIES_BUDGET_TOOLEMU:,} series: {'ok' if total <= SERIES_BUDGET_TOOLEMU else 'EXCEEDED'}")
    else:
        series_ok = per_agent <= SERIES_PER_AGENT_BUDGET
        print(f"  budget: <= {SERIES_PER_AGENT_BUDGET} series per agent: {'ok' if series_ok else 'EXCEEDED'}; "
              f"scrape < {SCRAPE_MS_BUDGET:.0f} ms: {'ok' if cached_ms < SCRAPE_MS_BUDGET else 'EXCEEDED'} inside the "
              f"cache's lifetime, {'ok' if ms < SCRAPE_MS_BUDGET else 'EXCEEDED'} for the scrape that rebuilds it "
              "(once per metrics_cache_s at most)")
    print(f"BENCH series_input={label} series={total} bytes={len(body)} scrape_ms={ms:.1f} "
          f"scrape_cached_ms={cached_ms:.1f} series_per_agent={per_agent:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
