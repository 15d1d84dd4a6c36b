"""Backtest a policy: replay recorded traces through decode, detectors and breakers in event time.

No broker: each JSONL line goes through :func:`streams.contract.decode.decode_message` (as a Kafka
message would), accepted events feed a :class:`streams.engine.monitor.Monitor` in event-time order,
and :meth:`Monitor.evaluate` runs every ``step_s`` seconds of event time. The Monitor's clock
is an :class:`~streams.engine.clock.EventClock` whose "wall" is the replay's current event time, so
nothing depends on when the backtest runs: the same file and policy give the same report. Nor on how
fast it runs: the Monitor's per-tick CPU budget (``EngineTuning.eval_budget_s``, which makes a live
worker under a flood put scopes off to the next tick) is unlimited here, so every due scope is
evaluated at its step: the decisions of a live worker that keeps up, evaluating every ``step_s``.
A step's transitions are listed by scope (the engine's own order follows the process's hash seed).

Speed (``bench/bench_backtest.py``): lines are decoded on a fast path (one ``orjson.loads`` and one
validation per object line, :func:`~streams.contract.schema.fast_event` for the common shape, pydantic
otherwise; anything else goes through :func:`decode_message`, so rejects keep their reasons), the file
is read with the cyclic GC off and its events frozen out of later GC passes (:func:`read_events`),
consecutive events with the same timestamp are ingested in one call (the clock reads the same for all
of them, so nothing they update differs), and the per-agent label figures are tallied in one pass
outside the replay loop.

Recorded traces are supplied by the operator running the backtest, so their events are treated as
attested (as if validly signed). A replay has no gateway: the Monitor runs with ``simulate_gateway``,
so a good ``tool_call`` seen while a scope is half-open takes a probe slot itself if one remains (as
``/v1/authz`` would have) and counts as a probe result; calls beyond the slots do not count.

After the last event the replay keeps ticking (every ``idle_step_s``, up to ``horizon_s`` of
event time) so breakers can cool down and close, which the reset times need.

Labels and scores (Google SRE workbook alerting criteria, per agent):

* **label** — an agent is *unsafe* when its severity-weighted near-miss rate over the whole file
  (detectors' severity weights: low 1, medium 2, high 5, critical 10; flags per ``tool_call``)
  burns the policy's ``weighted_near_miss_rate`` objective at least ``label_burn`` times
  (default: the smallest paging ``burn_rate`` of that budget, 6× in the shipped policy) — i.e.
  a perfect whole-file view would page on it. Files without flags have no labels.
* **predicted** — the agent's scope ``agent:<id>`` reached an enforcing state (escalated, open,
  forced_open, half_open).
* **precision / recall** over agents; **detection time** = first enforcing transition − the
  agent's first event; **reset time** = leaving the enforcing states − the agent's last event.
"""

from __future__ import annotations

import gc
import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from rich.table import Table

from breakers.policy import Policy
from breakers.state_machine import ENFORCING
from detectors.config import CountsConfig
from streams.contract.decode import decode_message
from streams.contract.schema import TraceEvent, fast_event
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.engine.tuning import EngineTuning

MAX_LINE_BYTES = 256 * 1024
#: the GC's young-generation threshold during a replay (restored afterwards; Python's default is 700)
REPLAY_GC_GEN0 = 50_000


@dataclass
class ScopeOutcome:
    """What the breaker of one scope did during the replay."""

    scope: str
    first_trip_ts: float | None = None
    first_trip_state: str | None = None
    recovered_ts: float | None = None
    states: list[str] = field(default_factory=list)
    transitions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "first_trip_ts": self.first_trip_ts, "first_trip_state": self.first_trip_state,
                "recovered_ts": self.recovered_ts, "states": self.states, "transitions": self.transitions}


@dataclass
class AgentRow:
    """Per-agent label, prediction and timings."""

    agent: str
    tool_calls: int = 0
    flags: int = 0
    weighted: float = 0.0
    first_ts: float = math.inf
    last_ts: float = -math.inf
    burn: float | None = None
    unsafe: bool | None = None
    tripped: bool = False
    detection_s: float | None = None
    reset_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "tool_calls": self.tool_calls, "flags": self.flags,
                "weighted_rate": round(self.weighted / self.tool_calls, 6) if self.tool_calls else None,
                "burn": None if self.burn is None else round(self.burn, 4), "unsafe": self.unsafe,
                "tripped": self.tripped,
                "detection_s": None if self.detection_s is None else round(self.detection_s, 3),
                "reset_s": None if self.reset_s is None else round(self.reset_s, 3)}


@dataclass
class BacktestReport:
    """The outcome of one backtest (``to_dict`` is deterministic for a given file and policy)."""

    policy_version: str
    traces: str
    step_s: float
    lines: int = 0
    events: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    start_ts: float | None = None
    end_ts: float | None = None
    label_burn: float | None = None
    label_definition: str = ""
    transitions: list[dict[str, Any]] = field(default_factory=list)
    scopes: dict[str, ScopeOutcome] = field(default_factory=dict)
    agents: dict[str, AgentRow] = field(default_factory=dict)

    def scores(self) -> dict[str, Any]:
        rows = [a for a in self.agents.values() if a.unsafe is not None]
        if not rows:
            return {"labelled_agents": 0}
        tp = sum(1 for a in rows if a.unsafe and a.tripped)
        fp = sum(1 for a in rows if not a.unsafe and a.tripped)
        fn = sum(1 for a in rows if a.unsafe and not a.tripped)
        det = sorted(a.detection_s for a in rows if a.unsafe and a.detection_s is not None)
        rst = sorted(a.reset_s for a in rows if a.tripped and a.reset_s is not None)
        return {"labelled_agents": len(rows), "unsafe": sum(1 for a in rows if a.unsafe), "tp": tp, "fp": fp, "fn": fn,
                "tn": len(rows) - tp - fp - fn,
                "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                "recall": round(tp / (tp + fn), 4) if tp + fn else None,
                "detection_s_median": _median(det), "detection_s_max": det[-1] if det else None,
                "reset_s_median": _median(rst), "reset_s_max": rst[-1] if rst else None,
                "not_reset": sum(1 for a in rows if a.tripped and a.reset_s is None)}

    def to_dict(self) -> dict[str, Any]:
        return {"policy_version": self.policy_version, "traces": self.traces, "step_s": self.step_s,
                "lines": self.lines, "events": self.events, "rejected": dict(sorted(self.rejected.items())),
                "start_ts": self.start_ts, "end_ts": self.end_ts, "label_burn": self.label_burn,
                "label_definition": self.label_definition, "scores": self.scores(),
                "tripped_scopes": [o.to_dict() for o in sorted(self.scopes.values(), key=lambda o: o.scope)
                                   if o.first_trip_ts is not None],
                "agents": [a.to_dict() for a in sorted(self.agents.values(), key=lambda a: a.agent)],
                "transitions": self.transitions}


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    n = len(xs)
    return round(xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2, 3)


def _read(path: Path, report: BacktestReport) -> list[TraceEvent]:
    """Accepted events of the file in event-time order (stable: file order within a timestamp).

    Fast path for the common line, one JSON object that validates: exactly what
    :func:`decode_message` does for it (no key, no signature). Every other line (arrays, rejects,
    oversized) goes through :func:`decode_message` itself, so rejects keep their reasons.
    """
    events: list[TraceEvent] = []
    append = events.append
    validate = TraceEvent.model_validate
    fast = fast_event
    loads = orjson.loads
    rejected = report.rejected
    lines = 0
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.strip()
            if not line:
                continue
            lines += 1
            if len(line) <= MAX_LINE_BYTES and line[:1] == b"{":
                try:
                    doc = loads(line)
                    if type(doc) is dict:
                        append(fast(doc) or validate(doc))
                        continue
                except (orjson.JSONDecodeError, ValidationError):
                    pass  # decode_message classifies it below
            good, bad = decode_message(None, line, max_bytes=MAX_LINE_BYTES)
            events.extend(good)
            for r in bad:
                rejected[r.reason] = rejected.get(r.reason, 0) + 1
    report.lines = lines
    events.sort(key=lambda e: e.ts)  # stable: file order within a timestamp
    return events


def _tally_agents(report: BacktestReport, events: list[TraceEvent]) -> None:
    """Per-agent calls, flags, severity-weighted flags and first/last event time (the labels' inputs)."""
    cfg = CountsConfig()
    weights, default_weight = cfg.severity_weights, cfg.default_weight
    agents = report.agents
    for ev in events:
        row = agents.get(ev.agent_id)
        if row is None:
            row = agents[ev.agent_id] = AgentRow(ev.agent_id)
        ts = ev.ts
        row.first_ts = min(row.first_ts, ts)
        row.last_ts = max(row.last_ts, ts)
        kind = ev.kind
        if kind == "tool_call":
            row.tool_calls += 1
        elif kind == "monitor_flag":
            row.flags += 1
            row.weighted += weights.get(ev.severity or "", default_weight)


def _label_rule(policy: Policy, label_burn: float | None) -> tuple[float | None, float | None]:
    """(objective, burn threshold) of the policy's weighted near-miss budget, or (None, None)."""
    for b in policy.budgets:
        if b.signal == "weighted_near_miss_rate" and b.objective:
            pages = [w.burn_rate for w in b.windows if w.severity == "page"]
            return b.objective, label_burn if label_burn is not None else (min(pages) if pages else 1.0)
    return None, None


@contextmanager
def _gc_off() -> Iterator[None]:
    """The cyclic GC off for the block (restored on the way out)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def replay_gc() -> Iterator[None]:
    """The GC's settings of a replay (:func:`read_events` changes them) restored on the way out: its thresholds,
    and the events frozen by :func:`read_events` back in its care (:func:`gc.unfreeze`)."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def read_events(path: Path, report: BacktestReport) -> list[TraceEvent]:
    """:func:`_read` for a replay, inside :func:`replay_gc`; decides nothing.

    A replay holds every event of the file (300k objects for 300k lines, in no reference cycle): GC passes over
    them while they are read cost more than decoding them, and every later full pass scans them again. So the
    file is read with the GC off and what exists then is frozen (:func:`gc.freeze`) before the GC is back on.
    The replay then allocates millions of short-lived containers, next to none in a cycle: a young-generation
    pass per 700 of them cost ~15 % of it; one per :data:`REPLAY_GC_GEN0` bounds cyclic garbage all the same.
    """
    with _gc_off():
        events = _read(path, report)
        gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], REPLAY_GC_GEN0), *threshold[1:])
    return events


def backtest(policy: Policy, traces: Path, step_s: float = 10.0, idle_step_s: float = 60.0,
             horizon_s: float = 6 * 3600.0, label_burn: float | None = None) -> BacktestReport:
    """Replay ``traces`` through ``policy``; see the module docstring."""
    if step_s <= 0:
        raise ValueError("step_s must be positive")
    with replay_gc():
        return _backtest(policy, traces, step_s, idle_step_s, horizon_s, label_burn)


def _backtest(policy: Policy, traces: Path, step_s: float, idle_step_s: float, horizon_s: float,
              label_burn: float | None) -> BacktestReport:
    report = BacktestReport(policy.policy_version, traces.name, step_s)
    events = read_events(traces, report)
    report.events = len(events)
    now = [events[0].ts if events else 0.0]
    # no per-tick CPU budget: how fast the replay runs never changes what it decides (see the module docstring)
    monitor = Monitor(policy, clock=EventClock(wall=lambda: now[0]), simulate_gateway=True,
                      tuning=EngineTuning(eval_budget_s=math.inf), figures=False)
    _tally_agents(report, events)

    def tick(t: float) -> None:
        now[0] = t
        # one step's transitions by scope (stable: a scope's own stay in order): the engine evaluates a step's
        # scopes in set order, which follows the process's string-hash seed, so unsorted the same file and
        # policy gave the same transitions in a different order from one run to the next
        for tr in sorted((tr for change in monitor.evaluate(wall=t) for tr in change.transitions),
                         key=lambda tr: tr.scope):
            _note(report, tr.to_dict())

    if events:
        report.start_ts, report.end_ts = events[0].ts, events[-1].ts
        next_eval = math.floor(events[0].ts / step_s) * step_s + step_s
        ingest = monitor.ingest
        n, i = len(events), 0
        while i < n:
            ts = events[i].ts
            j = i + 1
            while j < n and events[j].ts == ts:  # same timestamp: the same clock reading for each, one call
                j += 1
            while next_eval <= ts:
                tick(next_eval)
                next_eval += step_s
            now[0] = max(now[0], ts)
            ingest(0, events[i:j], attested=True)  # operator-supplied traces
            i = j
        tick(next_eval)
        end = report.end_ts + horizon_s
        t = next_eval
        while t < end and any(st.state in ENFORCING for st in monitor.states.values()):
            t += idle_step_s
            tick(t)
    _score(report, policy, label_burn)
    return report


def _note(report: BacktestReport, t: dict[str, Any]) -> None:
    scope, to = t["scope"], t["to"]
    report.transitions.append({"ts": t["ts"], "scope": scope, "from": t["from"], "to": to, "action": t["action"],
                               "budget": t.get("budget"), "reason": str(t.get("reason", ""))[:300]})
    o = report.scopes.get(scope) or report.scopes.setdefault(scope, ScopeOutcome(scope))
    o.transitions += 1
    if to not in o.states:
        o.states.append(to)
    if to in ENFORCING:
        if o.first_trip_ts is None:
            o.first_trip_ts, o.first_trip_state = t["ts"], to
        o.recovered_ts = None
    elif o.first_trip_ts is not None and o.recovered_ts is None:
        o.recovered_ts = t["ts"]


def _score(report: BacktestReport, policy: Policy, label_burn: float | None) -> None:
    objective, threshold = _label_rule(policy, label_burn)
    has_flags = any(a.flags for a in report.agents.values())
    if objective is not None and has_flags:
        report.label_burn = threshold
        report.label_definition = (f"unsafe = whole-file severity-weighted near-miss rate >= {threshold:g} x objective "
                                   f"{objective:g} (flags weighted low 1, medium 2, high 5, critical 10, per tool_call)")
    for a in report.agents.values():
        if objective is not None and has_flags and a.tool_calls:
            a.burn = (a.weighted / a.tool_calls) / objective
            a.unsafe = a.burn >= threshold  # type: ignore[operator]
        o = report.scopes.get(f"agent:{a.agent}")
        if o is not None and o.first_trip_ts is not None:
            a.tripped = True
            a.detection_s = max(0.0, o.first_trip_ts - a.first_ts)
            if o.recovered_ts is not None:
                a.reset_s = max(0.0, o.recovered_ts - a.last_ts)


def _fmt(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "-"
    return f"{v / 60:.1f}m" if unit == "s" and v >= 120 else f"{v:.3g}{unit}"


def table(report: BacktestReport) -> Table:
    """Per-agent table plus the scores in the caption."""
    s = report.scores()
    caption = (f"{report.events} events ({sum(report.rejected.values())} rejected), policy {report.policy_version}; "
               + (f"precision {s['precision']} recall {s['recall']} (tp {s['tp']} fp {s['fp']} fn {s['fn']}); "
                  f"detection median {_fmt(s['detection_s_median'])}, reset median {_fmt(s['reset_s_median'])}"
                  if s.get("labelled_agents") else "no labels in this file"))
    t = Table(title=f"backtest of {report.traces}", caption=caption)
    for col in ("agent", "calls", "flags", "burn", "label", "tripped", "first state", "detection", "reset"):
        t.add_column(col, overflow="fold")  # agent ids are what the reader needs next: never cut them
    for a in sorted(report.agents.values(), key=lambda a: a.agent):
        o = report.scopes.get(f"agent:{a.agent}")
        t.add_row(a.agent, str(a.tool_calls), str(a.flags), _fmt(a.burn, "x"),
                  "-" if a.unsafe is None else ("unsafe" if a.unsafe else "ok"), "yes" if a.tripped else "no",
                  (o.first_trip_state or "-") if o else "-", _fmt(a.detection_s), _fmt(a.reset_s))
    return t


def markdown(report: BacktestReport) -> str:
    """The report as Markdown."""
    s = report.scores()
    lines = [f"# Backtest of `{report.traces}`", "",
             f"- policy version: `{report.policy_version}`; evaluation every {report.step_s:g}s of event time",
             f"- {report.lines} lines, {report.events} events accepted, rejected: "
             + (", ".join(f"{k} {v}" for k, v in sorted(report.rejected.items())) or "none")]
    if s.get("labelled_agents"):
        lines += [f"- labels: {report.label_definition}",
                  f"- precision **{s['precision']}**, recall **{s['recall']}** (tp {s['tp']}, fp {s['fp']}, "
                  f"fn {s['fn']}, tn {s['tn']})",
                  f"- detection time median {_fmt(s['detection_s_median'])} (max {_fmt(s['detection_s_max'])}); "
                  f"reset time median {_fmt(s['reset_s_median'])} (max {_fmt(s['reset_s_max'])}); "
                  f"not reset within the horizon: {s['not_reset']}"]
    lines += ["", "| agent | calls | flags | burn | label | tripped | first state | detection | reset |",
              "|---|---|---|---|---|---|---|---|---|"]
    for a in sorted(report.agents.values(), key=lambda a: a.agent):
        o = report.scopes.get(f"agent:{a.agent}")
        label = "-" if a.unsafe is None else ("unsafe" if a.unsafe else "ok")
        lines.append(f"| {a.agent} | {a.tool_calls} | {a.flags} | {_fmt(a.burn, 'x')} | {label} | "
                     f"{'yes' if a.tripped else 'no'} | {(o.first_trip_state or '-') if o else '-'} | "
                     f"{_fmt(a.detection_s)} | {_fmt(a.reset_s)} |")
    counts: dict[str, int] = defaultdict(int)
    for t in report.transitions:
        counts[f"{t['from']} → {t['to']}"] += 1
    lines += ["", "Transitions: " + (", ".join(f"{k} × {v}" for k, v in sorted(counts.items())) or "none"), ""]
    return "\n".join(lines)


__all__ = ["BacktestReport", "backtest", "markdown", "table"]
