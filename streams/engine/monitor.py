"""The worker's domain core: events in, detector state, breaker decisions out. No faust here.

:class:`Monitor` owns, for the partitions this worker holds, the rolling counts of
every agent and agent×tool scope, each agent's drift and reliability detectors,
and runs the breaker policy on a tick. It also holds every breaker state of the
deployment (fed from ``breaker-state`` by the transport), so any worker answers
authz for any scope. The transport (``streams.worker.app``) publishes what
:meth:`Monitor.evaluate` returns and checkpoints what :meth:`Monitor.checkpoint`
returns; this split keeps the whole decision path testable without Kafka.

Cross-agent scopes (``tool:X``, ``tenant:T/global``, ``global``) are summed at read
time over this worker's agents, plus, when several workers share the topic, the
window counts the other workers publish per trace partition (:mod:`streams.engine.partials`).
Exactly one worker decides them: the holder of trace partition 0. Drill events
(``drill_id`` set) count for their own drill agent's scopes only, never for
cross-agent scopes, so a drill cannot spend a production budget.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from breakers.evaluate import Verdict, evaluate
from breakers.policy import Policy
from breakers.scope import ScopeError, is_valid_id, is_valid_scope, parse_scope, scopes_for, validate_id
from breakers.state_machine import BreakerState, Transition, record_probe_result, step
from breakers.state_table import BreakerStates
from detectors import AgentDrift, AgentReliability, DriftReport, RollingCounts, rate_estimate, window_label
from detectors.base import StateError
from detectors.config import CountsConfig
from streams.engine.clock import EventClock
from streams.worker.metrics import OTHER, LabelCap
from streams.engine.partials import RemotePartials
from streams.contract.schema import TraceEvent

log = logging.getLogger("tripwire.monitor")

#: a drift report keeps an agent's drift signal active this long (policy `drift` budgets read it)
DRIFT_ACTIVE_S = 6 * 3600.0


def encode_checkpoint(state: dict[str, Any]) -> bytes:
    """Checkpoint bytes: zlib (level 1) of the JSON state.

    >>> decode_checkpoint(encode_checkpoint({"a": 1}))
    {'a': 1}
    """
    return zlib.compress(orjson.dumps(state), 1)


def decode_checkpoint(value: bytes) -> Any:
    """Inverse of :func:`encode_checkpoint`; plain JSON (older checkpoints) is read as is."""
    if value[:1] in (b"{", b"["):
        return orjson.loads(value)
    return orjson.loads(zlib.decompress(value))


@dataclass
class AgentState:
    """Everything a worker keeps for one agent (lives on the agent's partition)."""

    agent_id: str
    partition: int
    counts: RollingCounts
    tools: dict[str, RollingCounts] = field(default_factory=dict)
    drift: AgentDrift = field(default_factory=AgentDrift)
    reliability: AgentReliability = field(default_factory=AgentReliability)
    last_drift_ts: float = 0.0
    newest_ts: float = 0.0
    tenant: str | None = None
    drill: bool = False
    scope: str = ""
    tool_scopes: dict[str, str] = field(default_factory=dict)
    label: str = ""  # the agent's /metrics label: its id, or "other" past the label cap

    def __post_init__(self) -> None:
        self.scope = "agent:" + self.agent_id
        self.tool_scopes = {t: f"{self.scope}/tool:{t}" for t in self.tools}

    def to_state(self) -> dict[str, Any]:
        return {
            "v": 1,
            "agent": self.agent_id,
            "partition": self.partition,
            "counts": self.counts.to_state(),
            "tools": {t: rc.to_state() for t, rc in self.tools.items()},
            "drift": self.drift.to_state(),
            "reliability": self.reliability.to_state(),
            "last_drift_ts": self.last_drift_ts,
            "newest_ts": self.newest_ts,
            "tenant": self.tenant,
            "drill": self.drill,
        }

    @classmethod
    def from_state(cls, st: dict[str, Any], config: CountsConfig) -> "AgentState":
        try:
            drift = AgentDrift.from_state(st["drift"])
        except (StateError, KeyError, ValueError):
            drift = AgentDrift()  # e.g. river upgraded: restart drift baselines, keep counts
        return cls(
            agent_id=st["agent"],
            partition=int(st["partition"]),
            counts=RollingCounts.from_state(st["counts"], config),
            tools={t: RollingCounts.from_state(s, config) for t, s in st["tools"].items()},
            drift=drift,
            reliability=AgentReliability.from_state(st["reliability"]),
            last_drift_ts=float(st.get("last_drift_ts", 0.0)),
            newest_ts=float(st.get("newest_ts", 0.0)),
            tenant=st.get("tenant"),
            drill=bool(st.get("drill", False)),
        )


class VerdictSummary(NamedTuple):
    """What /metrics needs of a verdict."""

    budget: str
    burn_rates: dict[str, float]
    budget_remaining: float | None
    fired: bool


@dataclass
class Change:
    """A breaker state to publish, with the transitions that led to it."""

    state: BreakerState
    transitions: list[Transition]
    verdicts: list[Verdict] = field(default_factory=list)


class _Reader:
    """breakers.EvidenceReader over the monitor's counts at one instant."""

    __slots__ = ("monitor", "now", "_cache")

    def __init__(self, monitor: "Monitor", now: float) -> None:
        self.monitor = monitor
        self.now = now
        self._cache: dict[tuple[str, int], dict[str, float]] = {}

    def window_counts(self, scope: str, window_s: int) -> dict[str, float]:
        key = (scope, window_s)
        hit = self._cache.get(key)
        if hit is None:
            hit = self.monitor.window_counts(scope, window_s, self.now)
            base = self.monitor.reset_baselines.get(scope)
            if base is not None and self.now - base[0] < window_s and window_s in base[1]:
                before = base[1][window_s]
                hit = {k: max(0.0, v - before.get(k, 0.0)) for k, v in hit.items()}
            self._cache[key] = hit
        return hit

    def drift_active(self, scope: str) -> bool:
        agent = self.monitor.agent_of(scope)
        st = self.monitor.agents.get(agent) if agent else None
        return bool(st and st.last_drift_ts and self.now - st.last_drift_ts <= DRIFT_ACTIVE_S)


_ZERO: dict[str, float] = {k: 0.0 for k in RollingCounts().window_counts(300, 0.0)}


class Monitor:
    """Detectors + breaker policy for the partitions this worker holds."""

    def __init__(self, policy: Policy, lateness_s: float = 300.0, clock: EventClock | None = None,
                 max_agents: int = 200, max_tools: int = 200) -> None:
        self.policy = policy
        self.config = CountsConfig(lateness_s=lateness_s)
        self.clock = clock or EventClock()
        self.agents: dict[str, AgentState] = {}
        #: bounded label cardinality on /metrics: agents past the cap share ``other_counts``
        self.agent_cap = LabelCap(max_agents)
        self.tool_cap = LabelCap(max_tools)
        self.other_counts = RollingCounts(self.config)
        self.states: BreakerStates = BreakerStates()
        #: scopes with new events since their last evaluation; ``urgent`` ones saw a flag,
        #: incident, error or drift (evaluated on the next tick), the others only good
        #: events, which cannot raise a rate: they are evaluated every ``relaxed_eval_s``
        #: (good calls can still complete a min-evidence rule, so they are not skipped)
        self.dirty_scopes: set[str] = set()
        self.urgent_scopes: set[str] = set()
        self.relaxed_eval_s = 5.0
        self._last_relaxed = 0.0
        self._cost_urgent = any(b.signal == "cost" for b in policy.budgets)
        #: a scope is evaluated on the first tick after a bad event (``evaluate_interval_s``,
        #: 0.25 s by default), then at most once per ``hot_eval_s`` while bad events keep coming
        self.hot_eval_s = 1.0
        #: CPU time one evaluation tick may spend; past it, the remaining scopes wait for the
        #: next tick (least recently evaluated first), so ingest keeps up when thousands of
        #: scopes change at once and decisions slow down instead of the whole worker
        self.eval_budget_s = 0.1
        self.sort_above = 500
        self.deferred_evaluations = 0
        self._evaluated_at: dict[str, float] = {}
        #: operator resets: (reset time, {window_s: counts at reset}) per scope; evidence from
        #: before a reset no longer counts against the scope (see :meth:`note_reset`)
        self.reset_baselines: dict[str, tuple[float, dict[int, dict[str, float]]]] = {}

        #: agents changed since their last checkpoint, in order of their first change
        self.dirty_agents: dict[str, None] = {}
        #: drift reports not yet published (bounded: under a drift storm the oldest go first)
        self.drift_reports: deque[tuple[str, DriftReport]] = deque(maxlen=1000)
        self.drift_total: Counter[tuple[str, str]] = Counter()
        self.transitions_total: Counter[tuple[str, str]] = Counter()
        self.late_events = 0
        #: scope evaluations and event updates that raised (a bug, or input the schema let through):
        #: counted, logged once per scope, and skipped; never allowed to stop the worker
        self.evaluation_errors = 0
        #: breaker-state records ignored because their scope does not parse (no worker writes such a record)
        self.invalid_remote_states = 0
        self._errors_logged: set[str] = set()
        #: per scope, the last evaluation's figures for /metrics (a slim copy: the full
        #: verdicts with their evidence are recomputed on demand by :meth:`explain`)
        self.last_verdicts: dict[str, list[VerdictSummary]] = {}
        self.agent_idle_evict_s = 3 * 86400.0
        self.decision_lags: list[float] = []
        self._scope_cache: dict[tuple[str, str | None, str | None], tuple[str, ...]] = {}
        self._pending_changes: list[Change] = []
        #: cross-agent scopes some budget covers, per (tool, tenant) of an event
        self._cross_cache: dict[tuple[str | None, str | None], tuple[str, ...]] = {}
        self.cross_scopes: set[str] = set()
        #: trace partitions this worker holds; None = not tracked (a lone worker holding them all)
        self.assigned: set[int] | None = None
        #: the other workers' cross-agent window counts, per trace partition
        self.remote = RemotePartials()
        #: False until the other workers' partials were read once (the decider waits for them)
        self.partials_ready = True

    def set_policy(self, policy: Policy) -> None:
        """Swap the policy in force (reload); every known scope is re-evaluated on the next tick."""
        self.policy = policy
        self._cost_urgent = any(b.signal == "cost" for b in policy.budgets)
        self._cross_cache.clear()
        self.cross_scopes = {s for s in self.cross_scopes if policy.budgets_for(s)}
        self.urgent_scopes.update(self.cross_scopes)
        self.urgent_scopes.update(self.states)
        for st in self.agents.values():
            self.urgent_scopes.add(st.scope)
            self.urgent_scopes.update(st.tool_scopes.values())

    # ------------------------------------------------------------------ ingest (hot path)
    def ingest(self, partition: int, events: Iterable[TraceEvent]) -> None:
        """Update detectors with accepted, de-duplicated events of one partition.

        An event whose update raises is counted in :attr:`evaluation_errors` and skipped:
        the events around it are still counted, and the worker keeps running.
        """
        for ev in events:
            try:
                self._ingest_one(partition, ev)
            except Exception as exc:  # noqa: BLE001 - one event never stops the worker
                self._failed(f"agent:{ev.agent_id}", "ingesting an event of", exc)

    def _failed(self, scope: str, doing: str, exc: BaseException) -> None:
        """Count a failure; log it once per scope (id escaped: no log injection from traffic)."""
        self.evaluation_errors += 1
        if scope in self._errors_logged:
            return
        if len(self._errors_logged) < 10_000:
            self._errors_logged.add(scope)
        log.error("%s %s failed (skipped; tripwire_evaluation_errors_total counts every failure): %s: %s",
                  doing, ascii(scope[:300]), type(exc).__name__, ascii(str(exc)[:300]), exc_info=exc)

    def _ingest_one(self, partition: int, ev: TraceEvent) -> None:
        agents = self.agents
        ts = ev.ts
        self.clock.observe(ts)
        agent_id = ev.agent_id
        st = agents.get(agent_id)
        if st is None:
            st = agents[agent_id] = AgentState(agent_id, partition, RollingCounts(self.config))
            st.label = self.agent_cap(agent_id)
        st.partition = partition
        if ts > st.newest_ts:
            st.newest_ts = ts
        if not st.counts.add_event(ev):
            self.late_events += 1
            return
        if st.label == OTHER:
            self.other_counts.add_event(ev)
        kind = ev.kind
        urgent = (kind == "monitor_flag" or kind == "incident" or ev.status == "error"
                  or (self._cost_urgent and ev.cost_usd))
        dirty = self.urgent_scopes if urgent else self.dirty_scopes
        dirty.add(st.scope)
        tool = ev.tool
        if tool is not None:
            slot = st.tools.get(tool)
            if slot is None:
                slot = st.tools[tool] = RollingCounts(self.config)
                st.tool_scopes[tool] = f"{st.scope}/tool:{tool}"
            slot.add_event(ev)
            dirty.add(st.tool_scopes[tool])
        if ev.tenant is not None:
            st.tenant = ev.tenant
        if ev.drill_id is not None:  # drill agents never count for cross-agent scopes
            st.drill = True
        elif not st.drill:
            cross = self._cross_cache.get((tool, ev.tenant))
            if cross is None:
                cross = self._cross_for(tool, ev.tenant)
            if cross:
                dirty.update(cross)
        for report in st.drift.update(ev):
            st.last_drift_ts = max(st.last_drift_ts, report.ts)
            self.urgent_scopes.add(st.scope)
            self.drift_total[(agent_id, report.signal)] += 1
            self.drift_reports.append((agent_id, report))
            log.info("drift: agent=%r signal=%s %s before=%.4g after=%.4g", agent_id, report.signal,
                     report.detector, report.before, report.after)
        st.reliability.update(ev)
        self.dirty_agents[agent_id] = None
        if self.states:
            self._probe_results(ev)

    def _probe_results(self, ev: TraceEvent) -> None:
        """Calls made while a scope is half-open report back as probe results."""
        for scope in self._scopes(ev.agent_id, ev.tool, ev.tenant):
            st = self.states.get(scope)
            if st is None or st.state != "half_open":
                continue
            if ev.drill_id is not None and self.agent_of(scope) is None:
                continue  # drill calls are no probe results for cross-agent scopes
            bad = ev.kind in ("monitor_flag", "incident") or (ev.kind == "tool_call" and ev.status == "error")
            if ev.kind == "tool_call" or bad:
                new, transitions = record_probe_result(st, not bad, self.clock.now(), self.policy,
                                                       reason=f"probe {ev.kind} {ev.event_id}")
                self._pending_changes.append(Change(new, transitions))
                self.states[scope] = new

    def _scopes(self, agent: str, tool: str | None, tenant: str | None) -> tuple[str, ...]:
        key = (agent, tool, tenant)
        hit = self._scope_cache.get(key)
        if hit is None:
            try:
                hit = scopes_for(agent, tool, tenant or None)
            except ScopeError:
                hit = ()
            if len(self._scope_cache) > 100_000:
                self._scope_cache.clear()
            self._scope_cache[key] = hit
        return hit

    def _cross_for(self, tool: str | None, tenant: str | None) -> tuple[str, ...]:
        """The cross-agent scopes an event of (tool, tenant) counts for that some budget covers."""
        try:
            scopes = scopes_for("x", tool, tenant or None)
        except ScopeError:
            scopes = ()
        hit = tuple(s for s in scopes if self.agent_of(s) is None and self.policy.budgets_for(s))
        if len(self._cross_cache) > 100_000:
            self._cross_cache.clear()
        self._cross_cache[(tool, tenant)] = hit
        self.cross_scopes.update(hit)
        return hit

    # ------------------------------------------------------------------ reads
    def agent_of(self, scope: str) -> str | None:
        try:
            return parse_scope(scope).agent
        except ScopeError:
            return None

    def counts_for(self, scope: str, partition: int | None = None) -> list[RollingCounts]:
        """The counts behind a scope string (this worker's agents; one partition's if given).

        Agent and agent×tool scopes (tenant-prefixed or not) read one agent's counts.
        Cross-agent scopes (``tool:X``, ``tenant:T/global``, ``global``) are summed over
        this worker's agents at read time: nothing extra on the per-event path. The
        other workers' share comes from :attr:`remote` (see :meth:`window_counts`).
        """
        try:
            s = parse_scope(scope)
        except ScopeError:
            return []
        if s.agent is not None:
            st = self.agents.get(s.agent)
            if st is None or (s.tenant is not None and st.tenant not in (None, s.tenant)):
                return []
            if s.tool is None:
                return [st.counts]
            rc = st.tools.get(s.tool)
            return [rc] if rc is not None else []
        out = []
        for st in self.agents.values():
            if st.drill or (s.tenant is not None and st.tenant != s.tenant):
                continue
            if partition is not None and st.partition != partition:
                continue
            if s.tool is not None:
                rc = st.tools.get(s.tool)
                if rc is not None:
                    out.append(rc)
            else:
                out.append(st.counts)
        return out

    def window_counts(self, scope: str, window_s: int, now: float, partition: int | None = None) -> dict[str, float]:
        """Summed window counts of a scope (zeros when nothing is known).

        For a cross-agent scope the other workers' published counts of the partitions
        this worker does not hold are added (not when reading one ``partition``).
        """
        parts = self.counts_for(scope, partition)
        remote = None
        if partition is None and self.assigned is not None and self.agent_of(scope) is None:
            remote = self.remote.window_counts(scope, window_s, exclude=self.assigned)
        if not parts and remote is None:
            return dict(_ZERO)
        if len(parts) == 1 and remote is None:
            return parts[0].window_counts(window_s, now)
        total = dict(_ZERO)
        for rc in parts:
            for k, v in rc.window_counts(window_s, now).items():
                total[k] += v
        if remote is not None:
            for k, v in remote.items():
                if k in total:
                    total[k] += v
        return total

    def partition_partials(self, partition: int) -> dict[str, dict[int, dict[str, float]]]:
        """This worker's window counts of every budgeted cross-agent scope on one trace partition.

        What the other workers add to their own (published by the transport); only scopes
        with counts are included.
        """
        now = self.clock.now()
        by_tool: dict[str | None, list[tuple[str, str | None, tuple[int, ...]]]] = {}
        for scope in self.cross_scopes:
            s = parse_scope(scope)
            windows = tuple(sorted({w for b in self.policy.budgets_for(scope) for r in b.windows
                                    for w in (r.long, r.short) if w}))
            by_tool.setdefault(s.tool, []).append((scope, s.tenant, windows))
        out: dict[str, dict[int, dict[str, float]]] = {}
        for st in self.agents.values():  # one pass over the partition's agents
            if st.partition != partition or st.drill:
                continue
            sources = [(rc, by_tool.get(tool, ())) for tool, rc in st.tools.items()]
            sources.append((st.counts, by_tool.get(None, [])))
            for rc, targets in sources:
                for scope, tenant, windows in targets:
                    if tenant is not None and st.tenant != tenant:
                        continue
                    per_window = out.setdefault(scope, {})
                    for w in windows:
                        acc = per_window.get(w)
                        counts = rc.window_counts(w, now)
                        if acc is None:
                            per_window[w] = dict(counts)
                        else:
                            for k, v in counts.items():
                                acc[k] += v
        return out

    def apply_partials(self, value: bytes | None, key: bytes | None = None) -> None:
        """A record of the scope-partials topic; scopes it changed are evaluated by the decider."""
        changed = self.remote.apply(value, key)
        if changed and self.decides_cross():
            self.cross_scopes.update(s for s in changed if self.policy.budgets_for(s))
            self.urgent_scopes.update(s for s in changed if s in self.cross_scopes)

    def decides_cross(self) -> bool:
        """Does this worker decide cross-agent scopes? (the holder of trace partition 0)"""
        return self.assigned is None or (0 in self.assigned and self.partials_ready)

    # ------------------------------------------------------------------ decisions
    def evaluate(self, wall: float | None = None) -> list[Change]:
        """Run the policy on changed scopes and on every enforcing scope; return what changed."""
        now = self.clock.now()
        wall = time.time() if wall is None else wall
        reader = _Reader(self, now)
        changes, self._pending_changes = self._pending_changes, []
        candidates = self.urgent_scopes
        self.urgent_scopes = set()
        if wall - self._last_relaxed >= self.relaxed_eval_s:
            self._last_relaxed = wall
            candidates |= self.dirty_scopes
            self.dirty_scopes = set()
        for scope, st in self.states.items():
            if st.state != "closed" and self._owns(scope):
                candidates.add(scope)
        policy = self.policy
        evaluated_at = self._evaluated_at
        hot_s = self.hot_eval_s
        order: Iterable[str] = candidates
        if len(candidates) > self.sort_above:  # overload: least recently evaluated first, no starvation
            order = sorted(candidates, key=lambda sc: evaluated_at.get(sc, -1e18))
        deadline = time.perf_counter() + self.eval_budget_s
        for scope in order:
            if wall - evaluated_at.get(scope, -1e18) < hot_s:
                self.urgent_scopes.add(scope)  # evaluated moments ago: at most once per hot_eval_s
                continue
            if time.perf_counter() > deadline:
                self.urgent_scopes.add(scope)  # out of this tick's budget: next tick, oldest first
                self.deferred_evaluations += 1
                continue
            try:
                if not policy.budgets_for(scope) and scope not in self.states:
                    continue
                if not self._owns(scope):
                    continue  # a cross-agent scope another worker decides
                evaluated_at[scope] = wall
                change = self._evaluate_scope(scope, reader, now, wall)
            except Exception as exc:  # noqa: BLE001 - one scope never stops the loop or the worker
                self._failed(scope, "evaluating", exc)
                continue
            if change is not None:
                changes.append(change)
        return changes

    def _evaluate_scope(self, scope: str, reader: "_Reader", now: float, wall: float) -> Change | None:
        policy = self.policy
        verdicts = evaluate(policy, scope, reader)
        self.last_verdicts[scope] = [VerdictSummary(v.budget, v.burn_rates, v.budget_remaining, v.fired)
                                     for v in verdicts]
        old = self.states.get(scope) or BreakerState.initial(scope, now, policy)
        new, transitions = step(old, verdicts, now, policy)
        agent = self.agent_of(scope)
        newest = self.agents[agent].newest_ts if agent in self.agents else 0.0
        if newest and wall - newest < 3600:
            self.decision_lags.append(max(0.0, wall - newest))
        if transitions or (scope in self.states and new != old):
            self.states[scope] = new
            for t in transitions:
                self.transitions_total[(t.from_state, t.to_state)] += 1
            return Change(new, transitions, verdicts)
        return None

    def explain(self, scope: str) -> list[dict[str, Any]]:
        """The policy's verdicts for ``scope`` right now, with reasons and evidence figures."""
        return [v.to_dict() for v in evaluate(self.policy, scope, _Reader(self, self.clock.now()))]

    def evict_idle(self) -> list[tuple[int, str]]:
        """Forget agents silent for ``agent_idle_evict_s`` of event time (bounded memory).

        Returns (partition, agent) of the evicted, whose checkpoints the transport deletes.
        Breaker states are kept: an open breaker stays open however long the agent is quiet.
        """
        now = self.clock.now()
        gone = [(st.partition, a) for a, st in self.agents.items()
                if st.newest_ts and now - st.newest_ts > self.agent_idle_evict_s and st.scope not in self.states]
        for _, a in gone:
            st = self.agents.pop(a)
            self.dirty_agents.pop(a, None)
            for sc in (st.scope, *st.tool_scopes.values()):
                self.last_verdicts.pop(sc, None)
                self._evaluated_at.pop(sc, None)
        return gone

    def note_reset(self, scope: str, at: float) -> None:
        """An operator reset ``scope``: evidence from before ``at`` stops counting against it.

        Without this, an evidence-based breaker re-trips seconds after a reset, on the
        very events the operator just reviewed. The counts at the reset are subtracted
        from each window until the window has rolled past the reset. Approximation: as
        pre-reset buckets age out of a window, the subtraction can exceed what is left of
        them (clamped at 0), so the window briefly under-counts; it is exact again once
        the window no longer reaches back before the reset.
        """
        if self.agent_of(scope) is not None and not self._owns(scope):
            return  # the owner of the scope's counts takes the baseline
        now = self.clock.now()
        windows = {w for b in self.policy.budgets_for(scope) for r in b.windows for w in (r.long, r.short) if w}
        self.reset_baselines[scope] = (at, {w: self.window_counts(scope, w, now) for w in windows})
        longest = max(windows, default=0)
        for s_, (t, _) in list(self.reset_baselines.items()):
            if now - t > max(longest, 3 * 86400):
                del self.reset_baselines[s_]

    def _owns(self, scope: str) -> bool:
        agent = self.agent_of(scope)
        return self.decides_cross() if agent is None else agent in self.agents

    def apply_remote(self, value: bytes | None, key: bytes | None = None) -> None:
        """Apply a record of the compacted ``breaker-state`` topic (newest ``updated_at`` wins)."""
        if value is None:
            if key is not None:
                self.states.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            st = BreakerState.from_dict(orjson.loads(value))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring an unreadable breaker-state record: %s", ascii(str(exc)[:300]))
            return
        if not is_valid_scope(st.scope):  # written by no worker: every scope a worker decides parses
            self.invalid_remote_states += 1
            log.warning("ignoring a breaker-state record with an invalid scope %s", ascii(st.scope[:300]))
            return
        cur = self.states.get(st.scope)
        if cur is None or st.updated_at >= cur.updated_at:
            if (st.state == "closed" and st.actor not in (None, "", "tripwire")
                    and cur is not None and cur.state != "closed"):
                self.note_reset(st.scope, st.since or st.updated_at)
            self.states[st.scope] = st

    # ------------------------------------------------------------------ partitions and checkpoints
    def checkpoint(self, max_bytes: int | None = None) -> list[tuple[int, str, bytes]]:
        """(partition, key, value) of agents changed since their last checkpoint, oldest change first.

        Values are zlib-compressed JSON (~7x smaller: a busy agent with five tools is
        ~24 KB of JSON, ~3.4 KB compressed). ``max_bytes`` bounds one call's output so
        that thousands of active agents do not flood the changelog every interval;
        agents left over stay dirty and go first next time. ``None`` writes them all
        (partitions being revoked, shutdown).
        """
        out = []
        written = 0
        for agent_id in list(self.dirty_agents):
            st = self.agents.get(agent_id)
            del self.dirty_agents[agent_id]
            if st is None:
                continue
            value = encode_checkpoint(st.to_state())
            out.append((st.partition, agent_id, value))
            written += len(value)
            if max_bytes is not None and written >= max_bytes:
                break
        return out

    def restore(self, key: str, value: bytes) -> None:
        """Load one agent's checkpoint (after a rebalance or restart)."""
        try:
            st = AgentState.from_state(decode_checkpoint(value), self.config)
            validate_id("agent", st.agent_id)  # a checkpoint written before ids were validated at ingest
            for tool in [t for t in st.tools if not is_valid_id("tool", t)]:
                del st.tools[tool], st.tool_scopes[tool]
        except (orjson.JSONDecodeError, zlib.error, KeyError, TypeError, ValueError, StateError) as exc:
            log.warning("ignoring an unreadable checkpoint for %s: %s", ascii(key[:300]), exc)
            return
        cur = self.agents.get(st.agent_id)
        if cur is None or cur.newest_ts <= st.newest_ts:
            st.label = cur.label if cur is not None else self.agent_cap(st.agent_id)
            self.agents[st.agent_id] = st
        if st.newest_ts:
            self.clock.observe(st.newest_ts)
        if not st.drill:  # its counts feed cross-agent scopes even before its next event
            for tool in (None, *st.tools):
                if (tool, st.tenant) not in self._cross_cache:
                    self._cross_for(tool, st.tenant)

    def drop_partitions(self, keep: set[int]) -> int:
        """Forget agents whose partition moved to another worker."""
        gone = [a for a, st in self.agents.items() if st.partition not in keep]
        for a in gone:
            del self.agents[a]
            self.dirty_agents.pop(a, None)
        return len(gone)

    # ------------------------------------------------------------------ metrics views
    def near_miss_rows(self, windows: Iterable[int]) -> list[tuple[str, str, int, float, float, float]]:
        """(agent label, tool label, window_s, rate, lower, upper) for /metrics.

        Agents within the label cap report per agent ("*" = all tools) and per tool
        within the tool cap; every agent past the cap reports together as ``other``
        (its events feed one shared window at ingest), so the cost of a scrape is bounded
        by the caps, not by the number of agents.
        """
        now = self.clock.now()
        rows = []
        windows = tuple(windows)
        series: list[tuple[str, str, RollingCounts]] = [(OTHER, "*", self.other_counts)]
        for st in self.agents.values():
            if st.label == OTHER:
                continue
            series.append((st.label, "*", st.counts))
            for tool, rc in st.tools.items():
                tl = self.tool_cap(tool)
                if tl != OTHER:
                    series.append((st.label, tl, rc))
        for agent, tool, rc in series:
            for w in windows:
                c = rc.window_counts(w, now)
                n = c["tool_calls"]
                if n <= 0:
                    continue
                est = rate_estimate(min(c["near_misses"], n), n)
                rows.append((agent, tool, w, est.rate, est.lower, est.upper))
        return rows


__all__ = ["AgentState", "Change", "Monitor", "window_label"]
