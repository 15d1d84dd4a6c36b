"""Per-agent figures the worker exports on ``/metrics``, read from the engine's counts (no prometheus here)."""

from __future__ import annotations

from collections.abc import Iterable

from detectors import RollingCounts, rate_estimate
from streams.engine.agent_state import AgentState
from streams.engine.clock import agent_now
from streams.engine.labels import OTHER, LabelCap

#: (agent label, tool label, window_s, rate, lower, upper)
NearMissRow = tuple[str, str, int, float, float, float]


def near_miss_rows(agents: Iterable[AgentState], other_counts: RollingCounts, tool_cap: LabelCap,
                   windows: Iterable[int], wall: float) -> list[NearMissRow]:
    """Near-miss rate with its 95% Wilson interval per agent label, tool label and window.

    Agents within the label cap report per agent ("*" = all tools) and per tool within the
    tool cap; every agent past the cap reports together as ``other`` (its events feed one
    shared window at ingest, ``other_counts``), so the cost of a scrape is bounded by the
    caps, not by the number of agents. Each agent is read at its own now (``wall`` less its lag),
    ``other`` at ``wall``.
    """
    rows = []
    windows = tuple(windows)
    series: list[tuple[str, str, RollingCounts, float]] = [(OTHER, "*", other_counts, wall)]
    for st in agents:
        if st.label == OTHER:
            continue
        now = agent_now(st.lag_s, wall)
        series.append((st.label, "*", st.counts, now))
        for tool, rc in st.tools.items():
            tl = tool_cap(tool)
            if tl != OTHER:
                series.append((st.label, tl, rc, now))
    for agent, tool, rc, now in series:
        for w in windows:
            c = rc.window_counts(w, now)
            n = c["tool_calls"]
            if n <= 0:
                continue
            est = rate_estimate(min(c["near_misses"], n), n)
            rows.append((agent, tool, w, est.rate, est.lower, est.upper))
    return rows
