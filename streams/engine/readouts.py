"""Per-agent figures the worker exports on ``/metrics``, read from the engine's counts (no prometheus here)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from detectors import RollingCounts, rate_estimate
from streams.engine.agent_state import AgentState
from streams.engine.clock import agent_now
from streams.engine.labels import OTHER, LabelCap

#: (agent label, tool label, window_s, rate, lower, upper)
NearMissRow = tuple[str, str, int, float, float, float]


def near_miss_rows(agents: Iterable[AgentState], other_counts: RollingCounts, tool_cap: LabelCap,
                   windows: Iterable[int], wall: float, tools_per_agent: int | None = None) -> list[NearMissRow]:
    """Near-miss rate with its 95% Wilson interval per agent label, tool label and window.

    Agents within the label cap report per agent ("*" = all tools) and per tool within the
    tool cap; every agent past the cap reports together as ``other`` (its events feed one
    shared window at ingest, ``other_counts``), so the cost of a scrape is bounded by the
    caps, not by the number of agents. Each agent is read at its own now (``wall`` less its lag),
    ``other`` at ``wall``. ``tools_per_agent``: per-tool rows only for each agent's that many tools
    with the most near-misses over the longest window (:func:`top_tools`); None = every tool.
    """
    rows = []
    windows = tuple(windows)
    series: list[tuple[str, str, RollingCounts, float]] = [(OTHER, "*", other_counts, wall)]
    for st in agents:
        if st.label == OTHER:
            continue
        now = agent_now(st.lag_s, wall)
        series.append((st.label, "*", st.counts, now))
        tools = st.tools if tools_per_agent is None else {
            t: st.tools[t] for t in top_tools(st.tools, tools_per_agent, max(windows), now)}
        for tool, rc in tools.items():
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


#: event kinds counted per agent for ``tripwire_agent_*_total`` (SLO numerators/denominators)
TOTAL_KINDS = ("tool_call", "monitor_flag")


def top_tools(tools: dict[str, RollingCounts], k: int, window_s: int, now: float) -> list[str]:
    """The ``k`` tools of one agent with the most near-misses over ``window_s`` (then most calls, then name).

    Tools with no call in the window are never picked: a per-tool series only where it helps.

    >>> from detectors import RollingCounts
    >>> import time
    >>> now = time.time()
    >>> tools = {n: RollingCounts() for n in ("a", "b", "c")}
    >>> def add(tool, kind):
    ...     tools[tool].add_event(type("E", (), {"ts": now, "kind": kind, "severity": None, "status": "ok",
    ...                                          "cost_usd": None, "tool": tool, "outcome": None})())
    >>> for _ in range(3): add("a", "tool_call")
    >>> for _ in range(2): add("b", "tool_call")
    >>> add("b", "monitor_flag")
    >>> top_tools(tools, 2, 3600, now)
    ['b', 'a']
    >>> top_tools(tools, 0, 3600, now)
    []
    """
    if k <= 0:
        return []
    ranked = []
    for tool, rc in tools.items():
        c = rc.window_counts(window_s, now)
        if c["tool_calls"] > 0:
            ranked.append((-c["near_misses"], -c["tool_calls"], tool))
    ranked.sort()
    return [tool for _, _, tool in ranked[:k]]


def is_agent_tool_scope(scope: str) -> bool:
    """True for an agent×tool scope (``[tenant:t/]agent:a/tool:x``), the one scope kind with a
    series per (agent, tool) pair.

    >>> [is_agent_tool_scope(s) for s in ("agent:a/tool:x", "tenant:t/agent:a/tool:x", "agent:a", "tool:x", "global")]
    [True, True, False, False, False]
    """
    return "agent:" in scope and "/tool:" in scope


def exported_scopes(burns: dict[str, float], not_closed: set[str], top_n: int) -> set[str]:
    """Scopes that get per-scope budget series on ``/metrics``: every scope that is not agent×tool
    (global, tool, agent: the per-agent aggregates), every scope whose breaker is not closed, and the
    ``top_n`` agent×tool scopes by highest burn rate (ties by scope). ``burns``: scope → highest burn.

    >>> burns = {"agent:a": 0.1, "agent:a/tool:x": 3.0, "agent:a/tool:y": 0.5, "agent:a/tool:z": 9.0}
    >>> sorted(exported_scopes(burns, {"agent:a/tool:y"}, 1))
    ['agent:a', 'agent:a/tool:y', 'agent:a/tool:z']
    """
    keep = {s for s in burns if not is_agent_tool_scope(s)} | (not_closed & burns.keys())
    pairs = sorted((s for s in burns if is_agent_tool_scope(s) and s not in keep), key=lambda s: (-burns[s], s))
    keep.update(pairs[:max(0, top_n)])
    return keep


#: longest label value of a breaker's reason/evidence on /metrics (a label, not a document)
MAX_TEXT_LABEL = 200


def evidence_digest(evidence: dict[str, Any]) -> str:
    """A one-line digest of a breaker's evidence: burn rates and the counts of the longest window.

    >>> evidence_digest({"burn_rates": {"1h": 20.0, "5m": 31.25},
    ...                  "counts": {"5m": {"tool_calls": 8}, "1h": {"tool_calls": 40, "near_misses": 9}}})
    'burn 1h 20.0x, 5m 31.2x; 1h: tool calls 40, near misses 9'
    >>> evidence_digest({})
    '-'
    """
    parts: list[str] = []
    burns = evidence.get("burn_rates") or {}
    if burns:
        parts.append("burn " + ", ".join(f"{w} {float(b):.1f}x" for w, b in burns.items()))
    counts = evidence.get("counts") or {}
    if counts:
        window, c = list(counts.items())[-1]
        bits = [f"{k.replace('_', ' ')} {float(c[k]):g}" for k in
                ("tool_calls", "near_misses", "incidents_critical", "errors") if float(c.get(k) or 0)]
        if bits:
            parts.append(f"{window}: " + ", ".join(bits))
    if "previous" in evidence:
        parts.append(f"was {evidence['previous']}")
    return "; ".join(parts) or "-"


def text_label(text: str) -> str:
    """``text`` as a bounded, single-line label value (control characters become spaces).

    >>> text_label("a\\nb"), len(text_label("x" * 500))
    ('a b', 200)
    """
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= MAX_TEXT_LABEL else clean[:MAX_TEXT_LABEL - 1] + "…"
