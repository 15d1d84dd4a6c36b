"""The worker's domain core: events in, detector state, breaker decisions out. No faust here.

:class:`Monitor` is the façade the transport drives. For the partitions this worker holds it
keeps every agent's state (:mod:`~streams.engine.agent_state`), updates it per event, and on a
tick runs the breaker policy on the scopes that changed (:mod:`~streams.engine.pacing`) over the
evidence of the moment (:mod:`~streams.engine.evidence`), read from one agent's counts or
summed across agents and workers (:mod:`~streams.engine.scope_counts`). It also holds every
breaker state of the deployment (fed from ``breaker-state`` by the transport), so any worker
answers authz for any scope. The transport (``streams.worker``) publishes what :meth:`evaluate`
returns and checkpoints what :meth:`checkpoint` returns: the whole decision path is testable
without Kafka. Scopes are typed once (:mod:`~streams.engine.scopes`); breaker states and
published records stay keyed by scope strings. Decisions run on the wall clock, each agent's
windows on its own event time (:mod:`~streams.engine.clock`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from breakers.evaluate import evaluate
from breakers.policy import Policy
from breakers.scope import Scope
from breakers.screen import needed_sums, screen
from breakers.state_machine import CLOSED, HALF_OPEN, TRIPWIRE, BreakerState, next_deadline, settled, step
from breakers.state_table import BreakerStates
from detectors import AgentDrift, DriftReport, RollingCounts, window_label
from detectors.batch import RingBatch
from detectors.config import CountsConfig
from streams.contract.internal_auth import BAD_SIGNATURE, BREAKER_STATE, UNAUTHENTICATED, Headers, RecordAuth
from streams.contract.schema import TraceEvent
from streams.engine.agent_state import AgentState, decode_checkpoint, encode_checkpoint
from streams.engine.agents import AgentTable, scopes_of
from streams.engine.clock import EventClock, agent_now, clamp, observe
from streams.engine.decisions import Change, VerdictSummary, caused_at
from streams.engine.evidence import EvidenceAt, ResetBaselines
from streams.engine.labels import OTHER, LabelCap
from streams.engine.pacing import EvaluationPacer
from streams.engine.partials import Partials
from streams.engine.probes import HalfOpenProbes
from streams.engine.rechecks import Rechecks
from streams.engine.readouts import TOTAL_KINDS, NearMissRow, near_miss_rows
from streams.engine.scope_counts import ScopeCounts
from streams.engine.scopes import ScopeIndex
from streams.engine.tuning import EngineTuning

log = logging.getLogger("tripwire.monitor")

#: the ``type`` of a model-change record on ``breaker-events`` (see :meth:`Monitor._model_seen`)
MODEL_CHANGE = "model_change"


#: why a breaker-state record can be ignored (the metric's label values)
IGNORED_STATE_REASONS = ("invalid_scope", "malformed", "future_updated_at", UNAUTHENTICATED, BAD_SIGNATURE)


class Monitor:
    """Detectors + breaker policy for the partitions this worker holds."""

    def __init__(self, policy: Policy, lateness_s: float = 300.0, clock: EventClock | None = None,
                 max_agents: int = 200, max_tools: int = 200, tuning: EngineTuning | None = None,
                 simulate_gateway: bool = False, figures: bool = True) -> None:
        """``clock``: the wall clock decisions run on (the backtest's is simulated); ``simulate_gateway``:
        the backtest only (no gateway in a replay): an observed good tool_call in half-open takes a probe
        slot itself, as authz would have (:class:`HalfOpenProbes`); ``figures=False`` (the backtest): no
        per-scope figures for /metrics (:attr:`last_verdicts`, budget left), which decide nothing."""
        self.figures = figures
        self.policy = policy
        self.tuning = tuning = tuning or EngineTuning()
        self.config = CountsConfig(lateness_s=lateness_s)
        self.clock = clock or EventClock()
        self.states: BreakerStates = BreakerStates()
        self.scopes = ScopeIndex(tuning.scope_cache_max)
        self.table = AgentTable(self.config, self.scopes, max_agents)
        self.table.set_drill_prefix(policy.drill_prefix)
        self.agents = self.table.agents
        #: agents changed since their last checkpoint, in order of their first change
        self.dirty_agents = self.table.dirty
        self.counts = ScopeCounts(self.agents, policy, self.scopes, tuning.scope_cache_max)
        self.counts.spilled = self.table.spilled_counts  # spilled agents still count for cross-agent scopes
        self.table.cross_for = self.counts.cross_for
        self.pacing = EvaluationPacer(tuning)
        self.reset_baselines = ResetBaselines()
        #: bounded label cardinality on /metrics: agents past the cap share ``other_counts``
        self.tool_cap = LabelCap(max_tools)
        self.other_counts = RollingCounts(self.config)
        self._cost_urgent = any(b.signal == "cost" for b in policy.budgets)
        self.probes = HalfOpenProbes(self.scopes, tuning.scope_cache_max, simulate_gateway)
        self._pending_changes: list[Change] = []
        self._errors_logged: set[str] = set()
        #: drift reports not yet published (bounded: under a drift storm the oldest go first)
        self.drift_reports: deque[tuple[str, DriftReport]] = deque(maxlen=tuning.drift_reports_max)
        #: decision latencies (seconds) not yet observed by /metrics: the transport appends one per published
        #: evidence-driven decision (``published − Change.caused_at``), never one per re-evaluation
        self.decision_lags: list[float] = []
        #: per scope, the last evaluation's figures for /metrics
        self.last_verdicts: dict[str, list[VerdictSummary]] = {}
        self.drift_total: Counter[tuple[str, str]] = Counter()
        #: accepted events of drill agents (id starts with the policy's drill_prefix), by kind
        self.drill_events: Counter[str] = Counter()
        #: model changes not yet published on breaker-events (``MODEL_CHANGE`` records, bounded like drift reports)
        self.model_changes: deque[dict[str, Any]] = deque(maxlen=tuning.drift_reports_max)
        #: agent → model changes declared (tripwire_model_changes_total)
        self.model_changes_total: Counter[str] = Counter()
        #: (agent label, kind) → events counted, kinds in TOTAL_KINDS: tripwire_agent_*_total (monotonic)
        self.agent_totals: Counter[tuple[str, str]] = Counter()
        self.transitions_total: Counter[tuple[str, str]] = Counter()
        self.late_events = 0
        #: scope evaluations and event updates that raised: counted, logged once per scope, skipped
        self.evaluation_errors = 0
        #: breaker-state records ignored, by reason: ``invalid_scope`` (no worker writes a scope that does not
        #: parse), ``malformed`` (no finite ``updated_at``) and ``future_updated_at`` (dated past the wall clock
        #: + ``tuning.state_future_skew_s``)
        self.ignored_remote_states: Counter[str] = Counter({r: 0 for r in IGNORED_STATE_REASONS})
        #: breakers not closed, by when they must be evaluated again absent new events (:mod:`~streams.engine.rechecks`)
        self.rechecks = Rechecks()
        #: scope → (windows its budgets read, has a drift budget): what can change its verdicts as time passes
        self._scope_windows: dict[str, tuple[tuple[int, ...], bool]] = {}
        self._deciding_cross = False
        #: scope evaluations a batch screen settled without the exact evaluation (``figures=False`` only)
        self.screened = 0
        self._settling = False  # True while an evaluation writes its own result (not an outside write)
        #: half-open scopes (a superset after ``states.clear()``): no event is a probe result while it is empty
        self._half_open: set[str] = set()
        self.states.on_write = self._state_written

    def set_policy(self, policy: Policy) -> None:
        """Swap the policy in force (reload); every known scope is re-evaluated on the next tick."""
        self.policy = policy
        self._cost_urgent = any(b.signal == "cost" for b in policy.budgets)
        self.table.set_drill_prefix(policy.drill_prefix)
        self.counts.set_policy(policy)
        self._scope_windows.clear()
        wake = self.pacing.wake
        wake(self.counts.cross_scopes)
        wake(self.states)
        for st in self.agents.values():
            wake((st.scope, *st.tool_scopes.values()))

    # ------------------------------------------------------------------ ingest (hot path)
    def ingest(self, partition: int, events: Iterable[TraceEvent], attested: bool = False) -> None:
        """Update detectors with accepted, de-duplicated events of one partition.

        ``attested``: the events were signed by a key bound to their agent. Unattested events count
        as evidence (they may help trip a breaker) but are never half-open probe results
        (:class:`HalfOpenProbes`): forged good traffic cannot close a breaker. An event dated ahead
        of the wall clock is counted at the wall clock (:mod:`streams.engine.clock`).

        An event whose update raises is counted in :attr:`evaluation_errors` and skipped:
        the events around it are still counted, and the worker keeps running.
        """
        wall = self.clock.now()
        for ev in events:
            try:
                self._ingest_one(partition, ev, attested, wall)
            except Exception as exc:  # noqa: BLE001 - one event never stops the worker
                self._failed(f"agent:{ev.agent_id}", "ingesting an event of", exc)

    def _failed(self, scope: str, doing: str, exc: BaseException) -> None:
        """Count a failure; log it once per scope (id escaped: no log injection from traffic)."""
        self.evaluation_errors += 1
        if scope in self._errors_logged:
            return
        if len(self._errors_logged) < self.tuning.errors_logged_max:
            self._errors_logged.add(scope)
        log.error("%s %s failed (skipped; tripwire_evaluation_errors_total counts every failure): %s: %s",
                  doing, ascii(scope[:300]), type(exc).__name__, ascii(str(exc)[:300]), exc_info=exc)

    def _ingest_one(self, partition: int, ev: TraceEvent, attested: bool, wall: float) -> None:
        tool = ev.tool  # the one place events' tools enter scopes: spelled as authz and the policy spell them
        if tool is not None and (canon := self.policy.canonical_tool(tool)) != tool:
            ev = ev.model_copy(update={"tool": canon})
        ts = clamp(ev.ts, wall)
        if ts != ev.ts:  # within the pipeline's max_future_skew_s: moves no watermark past the wall clock
            ev = ev.model_copy(update={"ts": ts})
        agent_id = ev.agent_id
        st = self.agents.get(agent_id)
        if st is None:
            st = self._admit(agent_id, partition)
        st.packed = None  # this event changes it: a later spill encodes it again
        if st.drill:  # drill traffic, by kind: production aggregates subtract it (tripwire_drill_events_total)
            self.drill_events[ev.kind] += 1
        st.partition = partition
        if ts > st.newest_ts:
            lag = st.lag_s
            st.newest_ts, st.lag_s = observe(st.newest_ts, st.lag_s, ts, wall)
            if st.lag_s != lag and self.rechecks.at:
                self._lag_moved(st, lag - st.lag_s)
        if not st.counts.add_event(ev):
            self.late_events += 1
            return
        if st.label == OTHER:
            self.other_counts.add_event(ev)
        kind = ev.kind
        if kind in TOTAL_KINDS:
            self.agent_totals[(st.label, kind)] += 1
        urgent = (kind == "monitor_flag" or kind == "incident" or ev.status == "error"
                  or (self._cost_urgent and ev.cost_usd))
        dirty = self.pacing.urgent if urgent else self.pacing.dirty
        rechecked = self.rechecks.at  # breakers not closed: any event is looked at next tick (good calls move
        # rates and complete minimum evidence too), as when every one of them was evaluated every tick
        (self.pacing.urgent if st.scope in rechecked else dirty).add(st.scope)
        tool = ev.tool
        if tool is not None:
            slot = st.tools.get(tool)
            if slot is None:
                slot = self.table.add_tool(st, tool)
            slot.add_event(ev)
            tool_scope = st.tool_scopes[tool]
            (self.pacing.urgent if tool_scope in rechecked else dirty).add(tool_scope)
        if ev.tenant is not None:
            st.tenant = ev.tenant
        if not st.drill:  # drill agents (by id, never by drill_id: metadata) never count for cross-agent scopes
            cross = self.counts.cross_for(tool, ev.tenant)
            if cross:
                dirty.update(cross)
        if ev.model is not None:
            self._model_seen(st, ev.model, ts)
        for report in st.drift.update(ev):
            st.last_drift_ts = max(st.last_drift_ts, report.ts)
            self.pacing.urgent.add(st.scope)
            self.drift_total[(agent_id, report.signal)] += 1
            self.drift_reports.append((agent_id, report))
            log.info("drift: agent=%r signal=%s %s before=%.4g after=%.4g", agent_id, report.signal,
                     report.detector, report.before, report.after)
        st.reliability.update(ev)
        self.dirty_agents[agent_id] = None
        if self._half_open:
            self._pending_changes += self.probes.record(ev, attested, st.drill, self.states, self.clock.now,
                                                        self.policy)

    # ------------------------------------------------------------------ reads
    def agent_of(self, scope: str) -> str | None:
        """The agent of an agent or agent×tool scope; None for cross-agent (or invalid) scopes."""
        return self.scopes.agent_of(scope)

    def _agent_state_of(self, scope: str) -> AgentState | None:
        agent = self.scopes.agent_of(scope)
        return self._live(agent) if agent is not None else None

    def window_counts(self, scope: str, window_s: int, wall: float, partition: int | None = None) -> dict[str, float]:
        """Summed window counts of a scope at wall-clock ``wall``, each agent at its own now; see :class:`ScopeCounts`."""
        typed = self.scopes.get(scope)
        if typed is not None and typed.agent is not None and typed.agent not in self.agents:
            self._live(typed.agent)  # a spilled agent is restored to be read
        return self.counts.window_counts(scope, typed, window_s, wall, partition)

    def observed_s(self, scope: str, window_s: int, wall: float) -> float | None:
        """Seconds of ``window_s`` this worker's counts of ``scope`` cover: from the oldest counted bucket to
        the agent's own now; None when nothing is counted, and for cross-agent scopes (a read per agent would
        cost O(agents) per evaluation: their remaining counts the whole period as observed, the lower reading).
        The budget period's elapsed share (:func:`breakers.evaluate`'s ``budget_remaining``)."""
        typed = self.scopes.get(scope)
        if typed is None or typed.agent is None:
            return None  # cross-agent: not read per agent (cost); the whole period counts as observed
        if typed.agent not in self.agents:
            self._live(typed.agent)
        spans = []
        for rc, st in self.counts.counts_for(typed):
            now = agent_now(st.lag_s, wall)
            first = rc.first_seen(window_s, now)
            if first is not None:
                spans.append(max(0.0, now - first))
        return max(spans) if spans else None

    def _reader(self, wall: float) -> EvidenceAt:
        return EvidenceAt(self.window_counts, self._agent_state_of, self.reset_baselines,
                          self.tuning.drift_active_s, wall, self.observed_s)

    # ------------------------------------------------------------------ cross-agent scopes across workers
    def share_with_workers(self, app_id: str) -> None:
        """Several workers share the trace topic: track partitions, wait for the others' partials."""
        self.counts.share_with_workers(app_id)

    def set_assignment(self, partitions: Iterable[int] | None) -> None:
        """The trace partitions this worker holds now (None: all of them, a lone worker)."""
        self.counts.set_assignment(partitions)

    def held_partitions(self) -> list[int]:
        """The trace partitions this worker holds, in order."""
        return self.counts.held_partitions()

    def has_cross_scopes(self) -> bool:
        """Does the policy budget a cross-agent scope this worker counted for? (else: nothing to share)"""
        return bool(self.counts.cross_scopes)

    def partials_caught_up(self) -> None:
        """The other workers' partials were read once: the decider may decide cross-agent scopes now."""
        self.pacing.wake(self.counts.partials_caught_up())

    def partition_partials(self, partition: int) -> Partials:
        """This worker's window counts of every budgeted cross-agent scope on one trace partition."""
        return self.counts.partition_partials(partition, self.clock.now())

    def apply_partials(self, value: bytes | None, key: bytes | None = None) -> None:
        """A record of the scope-partials topic; scopes it changed are evaluated by the decider."""
        self.pacing.wake(self.counts.apply_partials(value, key))

    def decides_cross(self) -> bool:
        """Does this worker decide cross-agent scopes? (the holder of trace partition 0)"""
        return self.counts.decides_cross()

    # ------------------------------------------------------------------ decisions
    def evaluate(self, wall: float | None = None) -> list[Change]:
        """Run the policy on changed scopes and on every enforcing scope; return what changed.

        Decisions (cool-downs, probe deadlines, approval expiry, transition times) run on the clock's
        wall-clock now, never on event time; ``wall`` paces the evaluations (default ``time.time()``).
        """
        now = self.clock.now()
        wall = time.time() if wall is None else wall
        reader = self._reader(now)
        changes, self._pending_changes = self._pending_changes, []
        policy = self.policy
        due: Iterable[str] = self.pacing.due(wall, self._enforcing_due(now))
        if not self.figures:  # no /metrics figures wanted (the backtest): settle what a batch screen can
            due = self._screened(due, now, wall)
        for scope in due:
            try:
                if not policy.budgets_for(scope) and scope not in self.states:
                    continue
                typed = self.scopes.get(scope)
                if typed is None or not self._owns_typed(typed):
                    continue  # a cross-agent scope another worker decides
                self.pacing.evaluated(scope, wall)
                change = self._evaluate_scope(scope, typed, reader, now, wall)
                self._reschedule(scope, typed, now)
            except Exception as exc:  # noqa: BLE001 - one scope never stops the loop or the worker
                self._failed(scope, "evaluating", exc)
                st = self.states.get(scope)
                if st is not None and st.state != CLOSED:
                    self.rechecks.schedule(scope, now)  # retried next tick, as before the rechecks
                continue
            if change is not None:
                changes.append(change)
        self._keep_cap()  # agents restored to be evaluated go back out past the cap
        return changes

    # ------------------------------------------------------------------ screening many scopes at once
    #: fewest scopes of one budget set worth a batch read (below it the exact evaluation is as cheap)
    SCREEN_MIN = 16

    def _screened(self, due: Iterable[str], now: float, wall: float) -> list[str]:
        """The scopes of ``due`` the exact evaluation must see; the others are settled here.

        Agent-bound scopes are read in one batch per budget set (:class:`detectors.batch.RingBatch`) and
        screened (:func:`breakers.screen.screen`): a scope whose fired actions are certain and whose state
        is :func:`~breakers.state_machine.settled` for them would not change, so it is only rescheduled.
        Everything else (undecided, half-open, reset baselines, spilled or cross-agent) is returned.
        """
        policy, states, agents = self.policy, self.states, self.agents
        exact: list[str] = []
        groups: dict[tuple[int, ...], list[tuple[str, Scope, BreakerState | None, RollingCounts, AgentState]]] = {}
        budget_sets: dict[tuple[int, ...], tuple[Any, ...]] = {}
        scope_of, budgets_for, baselines = self.scopes.get, policy.budgets_for, self.reset_baselines.by_scope
        for scope in due:
            typed = scope_of(scope)
            budgets = budgets_for(scope) if typed is not None else ()
            st = states.get(scope)
            if (typed is None or typed.agent is None or typed.tenant is not None or not budgets
                    or (st is not None and st.state == HALF_OPEN) or scope in baselines):
                exact.append(scope)
                continue
            agent = agents.get(typed.agent)  # ScopeCounts.counts_for of an agent-bound scope without a tenant
            rc = None if agent is None else (agent.counts if typed.tool is None else agent.tools.get(typed.tool))
            if rc is None:
                exact.append(scope)
                continue
            key = tuple(map(id, budgets))  # budgets are not hashable; the policy's objects are shared
            budget_sets[key] = budgets
            groups.setdefault(key, []).append((scope, typed, st, rc, agent))
        active_s = self.tuning.drift_active_s
        for key, items in groups.items():
            budgets = budget_sets[key]
            if len(items) < self.SCREEN_MIN:
                exact.extend(item[0] for item in items)
                continue
            try:
                nows = [agent_now(agent.lag_s, now) for _, _, _, _, agent in items]
                batch = RingBatch([rc for _, _, _, rc, _ in items])
                sums = {w: batch.window_columns(w, nows, keys) for w, keys in needed_sums(budgets).items()}
                drift = np.array([bool(a.last_drift_ts) and t - a.last_drift_ts <= active_s
                                  for (_, _, _, _, a), t in zip(items, nows)])
                verdicts = screen(budgets, sums, drift)
            except Exception as exc:  # noqa: BLE001 - the exact path still decides every scope
                self._failed(items[0][0], "screening", exc)
                exact.extend(item[0] for item in items)
                continue
            horizons = None
            evaluated_at, rechecks = self.pacing.evaluated_at, self.rechecks
            every_tick = self.tuning.evaluate_unchanged
            for i, ((scope, typed, st, _, _), fired) in enumerate(zip(items, verdicts)):
                if fired is None or not (settled(st, fired, now, policy) if st is not None else not fired):
                    exact.append(scope)
                    continue
                evaluated_at[scope] = wall  # self.pacing.evaluated(scope, wall)
                self.screened += 1
                if st is None or st.state == CLOSED or every_tick:
                    rechecks.cancel(scope)
                    continue
                if horizons is None:  # _evidence_horizon of every scope of the batch, at once
                    horizons = self._batch_horizons(scope, batch, nows, items).tolist()
                # self._reschedule(scope, typed, now, horizon) of an agent-bound scope without a tenant, not closed
                at = next_deadline(st, policy)
                if at > now:
                    at = min(at, horizons[i])
                rechecks.schedule(scope, at)
        return exact

    def _batch_horizons(self, scope: str, batch: RingBatch, nows: list[float],
                        items: list[tuple[str, Scope, BreakerState | None, RollingCounts, AgentState]]) -> np.ndarray:
        """:meth:`_evidence_horizon` of each scope of a screened batch (one budget set, no reset baselines)."""
        windows, drift = self._windows_of(scope)
        lags = np.array([agent.lag_s for *_, agent in items], dtype=np.float64)
        at = np.full(len(items), np.inf)
        for w in windows:
            at = np.minimum(at, batch.window_expiry(w, nows) + lags)
        if drift:
            active_s = self.tuning.drift_active_s
            for i, (*_, agent) in enumerate(items):
                t = agent.last_drift_ts
                if t and nows[i] - t <= active_s:
                    at[i] = min(at[i], t + active_s + agent.lag_s)
        return at - 1e-6

    # ------------------------------------------------------------------ which breakers not closed are due
    def _enforcing_due(self, now: float) -> list[str]:
        """Breakers not closed to evaluate this tick though no event woke them (:mod:`~streams.engine.rechecks`)."""
        if self.tuning.evaluate_unchanged:  # the reference rule: every one, every tick
            return [scope for scope, st in self.states.items() if st.state != CLOSED and self._owns(scope)]
        due = self.rechecks.due(now)
        deciding = self.counts.decides_cross()
        if deciding and not self._deciding_cross:  # this worker just became the decider of cross-agent scopes
            due += [scope for scope, st in self.states.items()
                    if st.state != CLOSED and self.scopes.agent_of(scope) is None]
        self._deciding_cross = deciding
        return due

    def _state_written(self, scope: str, st: BreakerState | None) -> None:
        """A state set by an operator, a probe or another worker: a breaker not closed is evaluated next tick."""
        if st is not None and st.state == HALF_OPEN:
            self._half_open.add(scope)
        else:
            self._half_open.discard(scope)
        if self._settling:
            return
        self.rechecks.cancel(scope)
        if st is not None and st.state != CLOSED:
            self.pacing.urgent.add(scope)

    def _lag_moved(self, st: AgentState, by: float) -> None:
        """The agent's own now (wall − lag) jumped ``by`` seconds: so did every window of its breakers.

        Forward (``by > 0``, a lagging partition caught up): their re-checks, set at the old lag
        (:meth:`_evidence_horizon`), move ``by`` earlier (a state timer moved with them only comes
        earlier: an early evaluation decides nothing new). Backward (an event dated before the agent's
        now, after it): buckets that had left a window are back in it, so they are evaluated next tick.
        """
        at = self.rechecks.at
        for scope in scopes_of(st):
            t = at.get(scope)
            if t is None:
                continue
            if by > 0:
                self.rechecks.schedule(scope, t - by)
            else:
                self.rechecks.cancel(scope)
                self.pacing.urgent.add(scope)

    def _wake_agent(self, agent_id: str) -> None:
        """The agent's breakers not closed are evaluated next tick (its state just became this worker's)."""
        states = self.states
        if states:
            self.pacing.urgent.update(sc for sc in states.agent_scopes(agent_id) if states[sc].state != CLOSED)

    def _reschedule(self, scope: str, typed: Scope, now: float, horizon: float | None = None) -> None:
        """After evaluating ``scope``: when to evaluate it again if no event, probe or operator wakes it
        (``horizon``: its :meth:`_evidence_horizon`, when the caller computed it already)."""
        st = self.states.get(scope)
        if st is None or st.state == CLOSED or self.tuning.evaluate_unchanged:
            self.rechecks.cancel(scope)
            return
        at = next_deadline(st, self.policy)
        if at > now:
            if typed.agent is None or typed.tenant is not None:
                at = now  # cross-agent sums and tenant-prefixed scopes (which no event wakes): every tick
            else:
                at = min(at, self._evidence_horizon(scope, typed, now) if horizon is None else horizon)
        self.rechecks.schedule(scope, at)

    def _windows_of(self, scope: str) -> tuple[tuple[int, ...], bool]:
        hit = self._scope_windows.get(scope)
        if hit is None:
            windows: set[int] = set()
            drift = False
            for b in self.policy.budgets_for(scope):
                if b.signal == "drift":
                    drift = True
                    windows.add(b.longest_window)
                else:
                    windows.update(w for r in b.windows for w in (r.long, r.short) if w)
            if len(self._scope_windows) > self.tuning.scope_cache_max:
                self._scope_windows.clear()
            hit = self._scope_windows[scope] = (tuple(sorted(windows)), drift)
        return hit

    def _evidence_horizon(self, scope: str, typed: Scope, now: float) -> float:
        """The first instant the verdicts of an agent-bound scope can change without new events.

        When the oldest non-empty bucket of one of its budgets' windows leaves it (at the agent's own lag),
        its drift signal goes quiet, or an operator reset's baseline leaves a window. A hair early: an
        evaluation before anything changed decides nothing, one after a change would be late.
        """
        windows, drift = self._windows_of(scope)
        t = math.inf
        active_s = self.tuning.drift_active_s
        for rc, st in self.counts.counts_for(typed):
            lag = st.lag_s
            read_at = agent_now(lag, now)
            for w in windows:
                e = rc.window_expiry(w, read_at) + lag
                if e < t:
                    t = e
            if drift and st.last_drift_ts and read_at - st.last_drift_ts <= active_s:
                t = min(t, st.last_drift_ts + active_s + lag)
        base = self.reset_baselines.by_scope.get(scope)
        if base is not None:
            for w in windows:
                if now - base[0] < w:
                    t = min(t, base[0] + w)
        return t - 1e-6

    def _evaluate_scope(self, scope: str, typed: Scope, reader: EvidenceAt, now: float, wall: float) -> Change | None:
        policy = self.policy
        verdicts = evaluate(policy, scope, reader, detail=False, figures=self.figures)  # the decision, no texts
        if self.figures:
            self.last_verdicts[scope] = [VerdictSummary.of(v) for v in verdicts]
        old = self.states.get(scope) or BreakerState.initial(scope, now, policy)
        new, transitions = step(old, verdicts, now, policy)
        if transitions:  # the same decision again, with the reasons and evidence the transitions record
            verdicts = evaluate(policy, scope, reader)
            new, transitions = step(old, verdicts, now, policy)
        if transitions or (scope in self.states and new != old):
            self._settling = True
            try:
                self.states[scope] = new
            finally:
                self._settling = False
            for t in transitions:
                self.transitions_total[(t.from_state, t.to_state)] += 1
            agent = self.agents.get(typed.agent) if typed.agent is not None else None
            return Change(new, transitions, verdicts, caused_at(transitions, agent.newest_ts if agent else None))
        return None

    def explain(self, scope: str) -> list[dict[str, Any]]:
        """The policy's verdicts for ``scope`` right now, with reasons and evidence figures."""
        return [v.to_dict() for v in evaluate(self.policy, scope, self._reader(self.clock.now()))]

    def _model_seen(self, st: AgentState, model: str, ts: float) -> None:
        """An event named ``model``: on a confirmed change the agent's drift detectors restart on the new model.

        The record published on ``breaker-events`` carries the old model's drift levels at the change
        (``before``) and the new model's levels when it last ran on this agent (``after``, ``None`` if it
        never did or was forgotten): :mod:`detectors.models`.
        """
        tuning = self.tuning
        switch = st.models.update(model, ts, tuning.drift_model_confirm, st.drift.levels)
        if switch is None:
            return
        before = switch.levels  # the old model's levels before the new model's first event
        after = st.models.levels_of(switch.after)
        st.models.park(switch.before, before, switch.ts, tuning.drift_models_max)
        st.drift = AgentDrift(st.drift.config)
        agent_id = st.agent_id
        self.model_changes_total[agent_id] += 1
        self.model_changes.append({"type": MODEL_CHANGE, "agent": agent_id, "from": switch.before,
                                   "to": switch.after, "ts": switch.ts, "before": before, "after": after})
        log.info("model change: agent=%s %s -> %s (drift detectors restarted)", ascii(agent_id[:300]),
                 ascii(switch.before), ascii(switch.after))

    def take_drift_reports(self) -> list[tuple[str, DriftReport]]:
        """Drift reports not yet published, oldest first (the queue is emptied)."""
        out = list(self.drift_reports)
        self.drift_reports.clear()
        return out

    def take_decision_lags(self) -> list[float]:
        """Decision latencies not yet observed by /metrics (the list is emptied)."""
        out, self.decision_lags = self.decision_lags, []
        return out

    def note_reset(self, scope: str, at: float) -> None:
        """An operator reset ``scope``: evidence from before ``at`` stops counting against it.

        Without this, an evidence-based breaker re-trips seconds after a reset, on the very
        events the operator just reviewed (see :class:`ResetBaselines`).
        """
        if self.scopes.agent_of(scope) is not None and not self._owns(scope):
            return  # the owner of the scope's counts takes the baseline
        now = self.clock.now()
        windows = {w for b in self.policy.budgets_for(scope) for r in b.windows for w in (r.long, r.short) if w}
        self.reset_baselines.note(scope, at, {w: self.window_counts(scope, w, now) for w in windows}, now,
                                  longest=max(windows, default=0))

    def _owns(self, scope: str) -> bool:
        typed = self.scopes.get(scope)
        return typed is not None and self._owns_typed(typed)

    def _owns_typed(self, typed: Scope) -> bool:
        if typed.agent is None:
            return self.counts.decides_cross()
        return typed.agent in self.agents or typed.agent in self.table.spilled

    #: checks that a breaker-state record was written by a worker (set by the transport from the signing
    #: keyring); None or a RecordAuth without keys: every record is accepted (nothing to authenticate with)
    record_auth: RecordAuth | None = None

    def apply_remote(self, value: bytes | None, key: bytes | None = None, headers: Headers | None = None) -> None:
        """Apply a record of the compacted ``breaker-state`` topic (newest ``updated_at`` wins).

        With a keyring, a record (tombstones too) not signed by a worker is ignored and counted as
        ``unauthenticated`` or ``bad_signature`` (``internal_auth: permissive`` accepts unsigned ones, counted).
        """
        auth = self.record_auth
        if auth is not None:
            accept, problem = auth.check(BREAKER_STATE, key, value, headers)
            if not accept:
                reason = problem or BAD_SIGNATURE
                self.ignored_remote_states[reason] += 1
                n = self.ignored_remote_states[reason]
                if n & (n - 1) == 0:  # 1st, 2nd, 4th, 8th …: a forged flood cannot flood the log
                    log.warning("ignoring a breaker-state record of %s: %s (%d so far; something other than a "
                                "worker writes the topic)", ascii((key or b"").decode("utf-8", "replace")[:300]),
                                reason, n)
                return
        if value is None:
            if key is not None:
                self.states.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            st = BreakerState.from_dict(orjson.loads(value))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring an unreadable breaker-state record: %s", ascii(str(exc)[:300]))
            return
        if self.scopes.get(st.scope) is None:  # written by no worker: every scope a worker decides parses
            self.ignored_remote_states["invalid_scope"] += 1
            log.warning("ignoring a breaker-state record with an invalid scope %s", ascii(st.scope[:300]))
            return
        ts = st.updated_at
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
            self.ignored_remote_states["malformed"] += 1
            log.warning("ignoring a breaker-state record of %s without a finite updated_at", ascii(st.scope[:300]))
            return
        if ts > time.time() + self.tuning.state_future_skew_s:
            self.ignored_remote_states["future_updated_at"] += 1
            log.warning("ignoring a breaker-state record of %s dated %s s ahead of this worker's clock",
                        ascii(st.scope[:300]), ascii(f"{st.updated_at - time.time():.0f}"))
            return
        cur = self.states.get(st.scope)
        if cur is not None and st == cur:
            return  # this worker's own record coming back (or a duplicate): nothing new
        if cur is None or st.updated_at >= cur.updated_at:
            if (st.state == CLOSED and st.actor not in (None, "", TRIPWIRE)
                    and cur is not None and cur.state != CLOSED):
                self.note_reset(st.scope, st.since or st.updated_at)
            self.states[st.scope] = st

    # ------------------------------------------------------------------ partitions and checkpoints
    def checkpoint(self, max_bytes: int | None = None) -> list[tuple[int, str, bytes]]:
        """(partition, key, value) of agents changed since their last checkpoint (see :meth:`AgentTable.checkpoint`)."""
        return self.table.checkpoint(max_bytes)

    def rewrite_checkpoints(self) -> None:
        """Make the next :meth:`checkpoint` calls write every agent again (the changelog was lost)."""
        self.dirty_agents.update(dict.fromkeys(self.agents))
        self.dirty_agents.update(dict.fromkeys(self.table.spilled))

    def restore(self, key: str, value: bytes) -> None:
        """Load one agent's checkpoint (after a rebalance or restart)."""
        st = self.table.restore(key, value)
        if st is None:
            return
        self._wake_agent(st.agent_id)
        if not st.drill:  # its counts feed cross-agent scopes even before its next event
            for tool in (None, *st.tools):
                self.counts.cross_for(tool, st.tenant)
        self._keep_cap()  # a restart holds no more live agents than the cap either

    # ------------------------------------------------------------------ bounded memory: spilling agents
    def _live(self, agent_id: str) -> AgentState | None:
        """The live state of an agent, restored from its spilled bytes if need be (None: unknown here)."""
        st = self.agents.get(agent_id)
        if st is None and agent_id in self.table.spilled:
            st = self.table.unspill(agent_id)
        return st

    def _admit(self, agent_id: str, partition: int) -> AgentState:
        """A live state for an agent that has none: its spilled state restored, else a new one (cap kept first)."""
        self._keep_cap(room=1)
        st = self.table.unspill(agent_id)
        if st is None:
            st = self.table.create(agent_id, partition)
            self._wake_agent(agent_id)  # breakers of an agent new to this worker: evaluated next tick
        return st

    def _keep_cap(self, room: int = 0) -> None:
        """Spill the least recently seen agents while more than ``max_live_agents - room`` are live.

        Spills 5 % of the cap more than needed, so that the search for the least recent runs once per
        that many new agents, not per agent.
        """
        cap = self.tuning.max_live_agents
        over = len(self.agents) + room - cap
        if over > 0:
            self._spill(self.table.least_recent(over + cap // 20, self._spillable))

    def _spillable(self, st: AgentState) -> bool:
        """An agent may leave memory unless one of its breakers is not closed (those are evaluated every tick)."""
        states = self.states
        if not states:
            return True
        for scope in scopes_of(st):
            b = states.get(scope)
            if b is not None and b.state != CLOSED:
                return False
        return True

    def _spill(self, agents: Iterable[AgentState]) -> None:
        for st in agents:
            self.table.spill(st.agent_id)
            scopes = list(scopes_of(st))
            for sc in scopes:
                self.last_verdicts.pop(sc, None)
            self.pacing.forget(scopes)  # pending evaluations stay pending: they restore the agent

    def evict_idle(self) -> list[tuple[int, str]]:
        """Spill agents silent for ``agent_spill_idle_s``; forget those silent for ``agent_idle_evict_s``.

        Returns (partition, agent) of the forgotten, whose checkpoints the transport deletes (their
        counts stay in cross-agent sums until they leave the windows). Breaker states are kept: an
        open breaker stays open however long the agent is quiet, and its agent is never spilled.
        """
        now = self.clock.now()
        self._spill([st for st in self.table.idle(now, self.tuning.agent_spill_idle_s) if self._spillable(st)])
        gone = [st for st in self.table.idle(now, self.tuning.agent_idle_evict_s)
                if st.scope not in self.states]
        for st in gone:
            self.table.forget(st.agent_id)
            scopes = list(scopes_of(st))
            for sc in scopes:
                self.last_verdicts.pop(sc, None)
            self.pacing.forget(scopes)
        return [(st.partition, st.agent_id) for st in gone] + self.table.forget_spilled(
            now, self.tuning.agent_idle_evict_s, keep=lambda agent: f"agent:{agent}" in self.states)

    def drop_partitions(self, keep: set[int]) -> int:
        """Forget agents whose partition moved to another worker."""
        gone = self.table.not_in(keep)
        for agent_id in gone:
            self.table.forget(agent_id)
        return len(gone) + self.table.drop_spilled_partitions(keep)

    # ------------------------------------------------------------------ metrics views
    def near_miss_rows(self, windows: Iterable[int]) -> list[NearMissRow]:
        """(agent label, tool label, window_s, rate, lower, upper) for /metrics (see :func:`near_miss_rows`)."""
        return near_miss_rows(self.agents.values(), self.other_counts, self.tool_cap, windows, self.clock.now())


__all__ = ["MODEL_CHANGE", "AgentState", "Change", "Monitor", "VerdictSummary", "decode_checkpoint", "encode_checkpoint",
           "window_label"]
