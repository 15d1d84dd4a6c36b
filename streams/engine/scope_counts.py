"""The counts behind a scope: one agent's, or a cross-agent sum over agents and the other workers.

Agent and agent×tool scopes (tenant-prefixed or not) read one agent's rolling counts.
Cross-agent scopes (``tool:X``, ``tenant:T/tool:X``, ``tenant:T/global``, ``global``) are summed
at read time over this worker's agents (nothing extra on the per-event path), plus, when several
workers share the trace topic, the window counts the other workers publish per trace partition
(:mod:`streams.engine.partials`). Exactly one worker decides cross-agent scopes: the holder of
trace partition 0. Drill agents (an id with the policy's drill prefix) never count for cross-agent
scopes, so a drill cannot spend a production budget.

Every agent's counts are read at that agent's own event-time now (:func:`streams.engine.clock.agent_now`,
from the wall clock the caller passes), also inside a cross-agent sum: an agent on a lagging
partition, or one that saw an odd event, is summed over its own last window, never read as empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from breakers.policy import Policy
from breakers.scope import Scope, ScopeError
from detectors import RollingCounts
from detectors.config import DEFAULT_COUNTS_CONFIG
from streams.engine.agent_state import AgentState
from streams.engine.clock import agent_now
from streams.engine.partials import Partials, RemotePartials
from streams.engine.scopes import ScopeIndex, cross_scopes_of

Counts = dict[str, float]
_ZERO: Counts = {k: 0.0 for k in RollingCounts().window_counts(300, 0.0)}


def _servable(window_s: int) -> int | None:
    """``window_s`` if the rolling counts can read it (a budget period up to their 30-day ring), else None."""
    try:
        DEFAULT_COUNTS_CONFIG.window_level(window_s)
    except ValueError:
        return None
    return window_s


class ScopeCounts:
    """Reads the counts of any scope; knows which cross-agent scopes are budgeted and who decides them."""

    def __init__(self, agents: dict[str, AgentState], policy: Policy, index: ScopeIndex,
                 cache_max: int = 100_000) -> None:
        self.agents = agents
        self.policy = policy
        self.index = index
        self.cache_max = cache_max
        #: budgeted cross-agent scopes some event of this worker (or another worker's partials) counted for
        self.cross_scopes: set[str] = set()
        self._cross_cache: dict[tuple[str | None, str | None], tuple[str, ...]] = {}
        #: trace partitions this worker holds; None = not tracked (a lone worker holding them all)
        self.assigned: set[int] | None = None
        #: the other workers' cross-agent window counts, per trace partition
        self.remote = RemotePartials()
        #: False until the other workers' partials were read once (the decider waits for them)
        self.partials_ready = True
        #: spilled agents' counts (:class:`streams.engine.agents.SpilledCounts`, set by the Monitor): summed
        #: into cross-agent scopes like the live agents' (no blind spot)
        self.spilled: Any = None

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self._cross_cache.clear()
        self.cross_scopes = {s for s in self.cross_scopes if policy.budgets_for(s)}

    # ------------------------------------------------------------------ which cross-agent scopes
    def cross_for(self, tool: str | None, tenant: str | None) -> tuple[str, ...]:
        """The budgeted cross-agent scopes an event of (tool, tenant) counts for (cached)."""
        hit = self._cross_cache.get((tool, tenant))
        if hit is not None:
            return hit
        try:
            typed = cross_scopes_of(tool, tenant)
        except ScopeError:
            typed = ()
        hit = tuple(text for text in map(self.index.add, typed) if self.policy.budgets_for(text))
        if len(self._cross_cache) > self.cache_max:
            self._cross_cache.clear()
        self._cross_cache[(tool, tenant)] = hit
        self.cross_scopes.update(hit)
        return hit

    # ------------------------------------------------------------------ sharing between workers
    def share_with_workers(self, app_id: str) -> None:
        """Several workers share the trace topic: track partitions, wait for the others' partials."""
        self.remote.app_id = app_id
        self.assigned = set()
        self.partials_ready = False

    def set_assignment(self, partitions: Iterable[int] | None) -> None:
        """The trace partitions this worker holds now (None: all of them, a lone worker)."""
        self.assigned = None if partitions is None else set(partitions)

    def held_partitions(self) -> list[int]:
        """The trace partitions this worker holds (whose partials it publishes), in order."""
        return sorted(self.assigned or ())

    def partials_caught_up(self) -> set[str]:
        """The other workers' partials were read once; returns the cross-agent scopes to re-evaluate."""
        if self.partials_ready:
            return set()
        self.partials_ready = True
        return set(self.cross_scopes)

    def decides_cross(self) -> bool:
        """Does this worker decide cross-agent scopes? (the holder of trace partition 0)"""
        return self.assigned is None or (0 in self.assigned and self.partials_ready)

    def apply_partials(self, value: bytes | None, key: bytes | None = None) -> set[str]:
        """A record of the scope-partials topic; returns the budgeted scopes the decider must re-evaluate."""
        changed = self.remote.apply(value, key)
        if not changed or not self.decides_cross():
            return set()
        self.cross_scopes.update(s for s in changed if self.policy.budgets_for(s))
        return {s for s in changed if s in self.cross_scopes}

    def partition_partials(self, partition: int, wall: float) -> Partials:
        """This worker's window counts of every budgeted cross-agent scope on one trace partition.

        What the other workers add to their own (published by the transport); only scopes
        with counts are included. Each agent is read at its own now (``wall`` less its lag).
        """
        by_tool: dict[str | None, list[tuple[str, str | None, tuple[int, ...]]]] = {}
        for scope in self.cross_scopes:
            s = self.index.get(scope)
            if s is None:
                continue
            windows = tuple(sorted({w for b in self.policy.budgets_for(scope) for r in b.windows
                                    for w in (r.long, r.short, _servable(b.period)) if w}))  # period: remaining
            by_tool.setdefault(s.tool, []).append((scope, s.tenant, windows))
        out: Partials = {}
        for st in self.agents.values():  # one pass over the partition's agents
            if st.partition != partition or st.drill:
                continue
            now = agent_now(st.lag_s, wall)
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
        if self.spilled is not None:
            self.spilled.add_partials(out, partition, {sc: w for ts in by_tool.values() for sc, _, w in ts}, wall)
        return out

    # ------------------------------------------------------------------ reads
    def counts_for(self, s: Scope, partition: int | None = None) -> list[tuple[RollingCounts, AgentState]]:
        """The counts behind a typed scope, each with its agent (this worker's agents; one partition's if given)."""
        if s.agent is not None:
            st = self.agents.get(s.agent)
            if st is None or (s.tenant is not None and st.tenant not in (None, s.tenant)):
                return []
            if s.tool is None:
                return [(st.counts, st)]
            rc = st.tools.get(s.tool)
            return [(rc, st)] if rc is not None else []
        out = []
        for st in self.agents.values():
            if st.drill or (s.tenant is not None and st.tenant != s.tenant):
                continue
            if partition is not None and st.partition != partition:
                continue
            if s.tool is not None:
                rc = st.tools.get(s.tool)
                if rc is not None:
                    out.append((rc, st))
            else:
                out.append((st.counts, st))
        return out

    def window_counts(self, scope: str, s: Scope | None, window_s: int, wall: float,
                      partition: int | None = None) -> Counts:
        """Summed window counts of a scope (zeros when nothing is known), each agent at its own now.

        For a cross-agent scope the other workers' published counts of the partitions this
        worker does not hold are added (not when reading one ``partition``).
        """
        if s is None:
            return dict(_ZERO)
        parts = self.counts_for(s, partition)
        if s.agent is None and self.spilled is not None:
            parts += self.spilled.parts(scope, partition)
        remote = None
        if partition is None and self.assigned is not None and s.agent is None:
            remote = self.remote.window_counts(scope, window_s, exclude=self.assigned)
        if not parts and remote is None:
            return dict(_ZERO)
        if len(parts) == 1 and remote is None:
            rc, st = parts[0]
            return rc.window_counts(window_s, agent_now(st.lag_s, wall))
        total = dict(_ZERO)
        for rc, st in parts:
            for k, v in rc.window_counts(window_s, agent_now(st.lag_s, wall)).items():
                total[k] += v
        if remote is not None:
            for k, v in remote.items():
                if k in total:
                    total[k] += v
        return total
