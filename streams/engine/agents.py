"""The agents of the partitions this worker holds: created, checkpointed, restored, forgotten.

An agent's scope strings (``agent:A``, ``agent:A/tool:T``) are typed once, when its state or
one of its tool slots is created, from ids the schema (or :meth:`AgentTable.restore`) validated.

Memory per agent is bounded by *spilling*: an agent idle for ``engine.agent_spill_idle_s``, or the
least recently seen ones past ``engine.max_live_agents``, leave the live dict and are kept only as
their checkpoint bytes (zlib'd JSON, ~0.6 KB for a one-event agent, the very record the changelog
holds) in :attr:`AgentTable.spilled`; the next event of the agent, or an evaluation of one of its
scopes, restores it (:meth:`AgentTable.unspill`, well under a millisecond). No blind spot: before an
agent leaves the live dict its counts are folded into :class:`SpilledCounts`, one rolling-counts
aggregate per (trace partition, budgeted cross-agent scope) it counts for, which cross-agent sums
read; restoring the agent takes exactly those counts back out.
"""

from __future__ import annotations

import heapq
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import orjson

from breakers.scope import is_drill_scope, is_valid_id, validate_id
from detectors import RollingCounts
from detectors.base import StateError
from detectors.config import CountsConfig
from streams.engine.agent_state import AgentState, decode_checkpoint, encode_checkpoint
from streams.engine.clock import agent_now
from streams.engine.labels import LabelCap
from streams.engine.scopes import ScopeIndex

log = logging.getLogger("tripwire.monitor")


class Spilled(NamedTuple):
    """A spilled agent: its checkpoint bytes, and the cross-agent aggregates its counts were folded into."""

    partition: int
    newest_ts: float
    value: bytes
    #: (cross-agent scope, tool or None for the agent's own counts) of each aggregate it was folded into
    folded: tuple[tuple[str, str | None], ...]


class _Lag(NamedTuple):
    """How far behind the wall clock an aggregate is read (as an agent's ``lag_s``)."""

    lag_s: float


class SpilledCounts:
    """The counts of spilled agents, summed per (trace partition, cross-agent scope).

    Cross-agent sums read these next to the live agents' counts, so spilling an agent never
    takes its events out of a ``global`` / ``tool:X`` / ``tenant:T/...`` budget while they are
    inside its windows. One aggregate is one :class:`~detectors.RollingCounts` (~3.7 KiB),
    however many agents it holds.

    >>> from detectors.testing import Ev
    >>> one = RollingCounts(); _ = one.add_event(Ev("incident", 1000.0, severity="critical"))
    >>> sc = SpilledCounts(); sc.add(0, "global", one, 1)
    >>> [rc.window_counts(300, 1000.0)["incidents"] for rc in sc.for_scope("global")], sc.for_scope("global", 1)
    ([1.0], [])
    """

    __slots__ = ("config", "by", "lags")

    def __init__(self, config: CountsConfig | None = None) -> None:
        self.config = config
        self.by: dict[tuple[int, str], RollingCounts] = {}
        #: per aggregate, the largest lag of an agent folded in: it is read at ``wall - lag`` (the earliest of
        #: its agents' nows), so every folded agent's whole window is in it (never less, see docs/security.md)
        self.lags: dict[tuple[int, str], _Lag] = {}

    def add(self, partition: int, scope: str, rc: RollingCounts, sign: int, lag_s: float = 0.0) -> None:
        """Fold ``rc`` (of an agent lagging ``lag_s``) in (``sign=1``) or take it back out (``-1``)."""
        key = (partition, scope)
        agg = self.by.get(key)
        if agg is None:
            if sign < 0:
                return
            agg = self.by[key] = RollingCounts(self.config or rc.config)
            self.lags[key] = _Lag(0.0)
        agg.add_counts(rc, sign)
        if sign > 0 and lag_s > self.lags[key].lag_s:
            self.lags[key] = _Lag(lag_s)

    def parts(self, scope: str, partition: int | None = None) -> list[tuple[RollingCounts, "_Lag"]]:
        """(aggregate, its lag) pairs as :meth:`ScopeCounts.counts_for` gives (counts, agent) pairs."""
        return [(rc, self.lags[k]) for k, rc in self.by.items()
                if k[1] == scope and (partition is None or k[0] == partition)]

    def add_partials(self, out: dict[str, dict[int, dict[str, float]]], partition: int,
                     windows: dict[str, tuple[int, ...]], wall: float) -> None:
        """Add one partition's aggregates to the partials ``out`` (scope -> window -> counts)."""
        for scope, rc in self.of_partition(partition):
            ws = windows.get(scope)
            if not ws or rc.empty:
                continue
            per_window = out.setdefault(scope, {})
            now = wall - self.lags[(partition, scope)].lag_s
            for w in ws:
                counts = rc.window_counts(w, now)
                acc = per_window.get(w)
                if acc is None:
                    per_window[w] = dict(counts)
                else:
                    for k, v in counts.items():
                        acc[k] += v

    def for_scope(self, scope: str, partition: int | None = None) -> list[RollingCounts]:
        """The aggregates of ``scope`` (of one trace partition if given)."""
        return [rc for (p, sc), rc in self.by.items() if sc == scope and (partition is None or p == partition)]

    def of_partition(self, partition: int) -> Iterator[tuple[str, RollingCounts]]:
        """(scope, aggregate) of one trace partition."""
        return ((sc, rc) for (p, sc), rc in self.by.items() if p == partition)

    def keep_partitions(self, keep: set[int]) -> None:
        """Drop the aggregates of trace partitions that moved to another worker."""
        for key in [k for k in self.by if k[0] not in keep]:
            del self.by[key], self.lags[key]


class AgentTable:
    """Agent states by id, which changed since their last checkpoint, and their /metrics labels."""

    def __init__(self, config: CountsConfig, scopes: ScopeIndex, max_agents: int) -> None:
        self.config = config
        self.scopes = scopes
        self.agents: dict[str, AgentState] = {}
        #: agents changed since their last checkpoint, in order of their first change
        self.dirty: dict[str, None] = {}
        #: bounded label cardinality on /metrics: agents past the cap report as ``other``
        self.agent_cap = LabelCap(max_agents)
        #: the policy's drill prefix: an agent is a drill agent by its id alone (:meth:`set_drill_prefix`)
        self.drill_prefix = "drill-"
        #: agents spilled out of :attr:`agents`, kept as their checkpoint bytes (see the module docstring)
        self.spilled: dict[str, Spilled] = {}
        #: spilled agents' counts, read by cross-agent sums
        self.spilled_counts = SpilledCounts(config)
        #: agents spilled since start (``tripwire_agents_spilled_total``)
        self.spilled_total = 0
        #: the budgeted cross-agent scopes counts of (tool, tenant) are summed into (set by the Monitor)
        self.cross_for: Callable[[str | None, str | None], Iterable[str]] = lambda tool, tenant: ()

    def create(self, agent_id: str, partition: int) -> AgentState:
        """A new agent seen in an event (its id validated by the schema)."""
        st = self.agents[agent_id] = AgentState(agent_id, partition, RollingCounts(self.config))
        st.drill = is_drill_scope(st.scope, self.drill_prefix)
        self.scopes.intern(None, agent_id, None)
        st.label = self.agent_cap(agent_id)
        return st

    def add_tool(self, st: AgentState, tool: str) -> RollingCounts:
        """A new tool slot of an agent (the tool name validated by the schema)."""
        slot = st.tools[tool] = RollingCounts(self.config)
        st.tool_scopes[tool] = self.scopes.intern(None, st.agent_id, tool)
        return slot

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
        for agent_id in list(self.dirty):
            st = self.agents.get(agent_id)
            del self.dirty[agent_id]
            if st is None:
                rec = self.spilled.get(agent_id)
                if rec is None:
                    continue
                partition, value = rec.partition, rec.value  # spilled: its bytes are its checkpoint
            else:
                partition = st.partition
                value = st.packed if st.packed is not None else encode_checkpoint(st.to_state())
            out.append((partition, agent_id, value))
            written += len(value)
            if max_bytes is not None and written >= max_bytes:
                break
        return out

    def restore(self, key: str, value: bytes) -> AgentState | None:
        """Load one agent's checkpoint; returns the state read (None when unreadable).

        The state replaces the one held unless that one saw newer events.
        """
        st = self._decode(key, value)
        if st is None:
            return None
        rec = self.spilled.get(st.agent_id)
        if rec is not None:
            if rec.newest_ts > st.newest_ts:
                return st
            self._drop_spilled(st.agent_id)
        cur = self.agents.get(st.agent_id)
        if cur is None or cur.newest_ts <= st.newest_ts:
            st.label = cur.label if cur is not None else self.agent_cap(st.agent_id)
            self.agents[st.agent_id] = st
            for tool in (None, *st.tools):
                self.scopes.intern(None, st.agent_id, tool)
        return st

    def _decode(self, key: str, value: bytes) -> AgentState | None:
        """An agent state from checkpoint bytes, ids checked again (None when unreadable, logged)."""
        try:
            st = AgentState.from_state(decode_checkpoint(value), self.config)
            validate_id("agent", st.agent_id)  # a checkpoint written before ids were validated at ingest
            bad = [t for t in st.tools if not is_valid_id("tool", t)]
            for tool in bad:
                del st.tools[tool], st.tool_scopes[tool]
        except (orjson.JSONDecodeError, zlib.error, KeyError, TypeError, ValueError, StateError) as exc:
            log.warning("ignoring an unreadable checkpoint for %s: %s", ascii(key[:300]), exc)
            return None
        st.drill = is_drill_scope(st.scope, self.drill_prefix)  # from the id, never from a stored flag
        if not bad:
            st.packed = value
        return st

    # ------------------------------------------------------------------ spilling (bounded memory)
    def spill(self, agent_id: str) -> AgentState:
        """Move a live agent out of :attr:`agents` into :attr:`spilled` (its checkpoint bytes); returns it.

        A dirty agent stays dirty: the next checkpoint writes its spilled bytes.
        """
        st = self.agents.pop(agent_id)
        value = st.packed if st.packed is not None else encode_checkpoint(st.to_state())
        folded: tuple[tuple[str, str | None], ...] = ()
        if not st.drill:  # drill agents never count for cross-agent scopes
            folded = tuple((sc, tool) for tool in (None, *st.tools) for sc in self.cross_for(tool, st.tenant)
                           if self._tool_of(sc) == tool)
            self._fold(st, folded, 1)
        self.spilled[agent_id] = Spilled(st.partition, st.newest_ts, value, folded)
        self.scopes.forget(scopes_of(st))
        self.spilled_total += 1
        return st

    def unspill(self, agent_id: str) -> AgentState | None:
        """Bring a spilled agent back into :attr:`agents` (None if it is not spilled)."""
        rec = self.spilled.get(agent_id)
        if rec is None:
            return None
        st = self._drop_spilled(agent_id)
        if st is None:
            return None
        st.label = self.agent_cap(agent_id)
        self.agents[agent_id] = st
        for tool in (None, *st.tools):
            self.scopes.intern(None, agent_id, tool)
        return st

    def _drop_spilled(self, agent_id: str) -> AgentState | None:
        """Remove a spilled agent, taking its counts back out of the aggregates; returns its state."""
        rec = self.spilled.pop(agent_id)
        st = self._decode(agent_id, rec.value)
        if st is not None:
            self._fold(st, rec.folded, -1)
        return st

    def _tool_of(self, scope: str) -> str | None:
        typed = self.scopes.get(scope)
        return typed.tool if typed is not None else None

    def _fold(self, st: AgentState, folded: Iterable[tuple[str, str | None]], sign: int) -> None:
        for scope, tool in folded:
            rc = st.counts if tool is None else st.tools.get(tool)
            if rc is not None:
                self.spilled_counts.add(st.partition, scope, rc, sign, st.lag_s)

    def least_recent(self, n: int, spillable: Callable[[AgentState], bool]) -> list[AgentState]:
        """Up to ``n`` spillable live agents, least recently seen (event time) first."""
        return heapq.nsmallest(n, (st for st in self.agents.values() if spillable(st)), key=lambda st: st.newest_ts)

    def forget_spilled(self, now: float, idle_s: float, keep: Callable[[str], bool]) -> list[tuple[int, str]]:
        """Drop spilled agents silent for more than ``idle_s``; returns their (partition, id).

        Their counts stay in the aggregates (they age out of the windows by themselves).
        """
        gone = [(rec.partition, a) for a, rec in self.spilled.items()
                if rec.newest_ts and now - rec.newest_ts > idle_s and not keep(a)]
        for _, agent_id in gone:
            del self.spilled[agent_id]
            self.dirty.pop(agent_id, None)
        return gone

    def set_drill_prefix(self, prefix: str) -> None:
        """The policy's drill prefix (policy reload): every agent's drill flag is derived from its id again."""
        self.drill_prefix = prefix
        for st in self.agents.values():
            st.drill = is_drill_scope(st.scope, prefix)

    def forget(self, agent_id: str) -> AgentState:
        """Drop an agent (evicted, or its partition moved); returns its state."""
        st = self.agents.pop(agent_id)
        self.dirty.pop(agent_id, None)
        self.scopes.forget(scopes_of(st))
        return st

    def idle(self, now: float, idle_s: float) -> list[AgentState]:
        """Agents silent for more than ``idle_s`` of event time."""
        return [st for st in self.agents.values()
                if st.newest_ts and agent_now(st.lag_s, now) - st.newest_ts > idle_s]  # wall time since its newest

    def not_in(self, keep: set[int]) -> list[str]:
        """Agents whose partition is not one of ``keep``."""
        return [a for a, st in self.agents.items() if st.partition not in keep]

    def drop_spilled_partitions(self, keep: set[int]) -> int:
        """Forget spilled agents (and aggregates) of partitions not in ``keep``; returns how many agents."""
        gone = [a for a, rec in self.spilled.items() if rec.partition not in keep]
        for agent_id in gone:
            del self.spilled[agent_id]
            self.dirty.pop(agent_id, None)
        self.spilled_counts.keep_partitions(keep)
        return len(gone)


def scopes_of(st: AgentState) -> Iterator[str]:
    """The agent's scope and its agent×tool scopes."""
    yield st.scope
    yield from st.tool_scopes.values()
