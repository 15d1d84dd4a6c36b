"""The agents of the partitions this worker holds: created, checkpointed, restored, forgotten.

An agent's scope strings (``agent:A``, ``agent:A/tool:T``) are typed once, when its state or
one of its tool slots is created, from ids the schema (or :meth:`AgentTable.restore`) validated.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator

import orjson

from breakers.scope import is_valid_id, validate_id
from detectors import RollingCounts
from detectors.base import StateError
from detectors.config import CountsConfig
from streams.engine.agent_state import AgentState, decode_checkpoint, encode_checkpoint
from streams.engine.labels import LabelCap
from streams.engine.scopes import ScopeIndex

log = logging.getLogger("tripwire.monitor")


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

    def create(self, agent_id: str, partition: int) -> AgentState:
        """A new agent seen in an event (its id validated by the schema)."""
        st = self.agents[agent_id] = AgentState(agent_id, partition, RollingCounts(self.config))
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
                continue
            value = encode_checkpoint(st.to_state())
            out.append((st.partition, agent_id, value))
            written += len(value)
            if max_bytes is not None and written >= max_bytes:
                break
        return out

    def restore(self, key: str, value: bytes) -> AgentState | None:
        """Load one agent's checkpoint; returns the state read (None when unreadable).

        The state replaces the one held unless that one saw newer events.
        """
        try:
            st = AgentState.from_state(decode_checkpoint(value), self.config)
            validate_id("agent", st.agent_id)  # a checkpoint written before ids were validated at ingest
            for tool in [t for t in st.tools if not is_valid_id("tool", t)]:
                del st.tools[tool], st.tool_scopes[tool]
        except (orjson.JSONDecodeError, zlib.error, KeyError, TypeError, ValueError, StateError) as exc:
            log.warning("ignoring an unreadable checkpoint for %s: %s", ascii(key[:300]), exc)
            return None
        cur = self.agents.get(st.agent_id)
        if cur is None or cur.newest_ts <= st.newest_ts:
            st.label = cur.label if cur is not None else self.agent_cap(st.agent_id)
            self.agents[st.agent_id] = st
            for tool in (None, *st.tools):
                self.scopes.intern(None, st.agent_id, tool)
        return st

    def forget(self, agent_id: str) -> AgentState:
        """Drop an agent (evicted, or its partition moved); returns its state."""
        st = self.agents.pop(agent_id)
        self.dirty.pop(agent_id, None)
        self.scopes.forget(scopes_of(st))
        return st

    def idle(self, now: float, idle_s: float) -> list[AgentState]:
        """Agents silent for more than ``idle_s`` of event time."""
        return [st for st in self.agents.values() if st.newest_ts and now - st.newest_ts > idle_s]

    def not_in(self, keep: set[int]) -> list[str]:
        """Agents whose partition is not one of ``keep``."""
        return [a for a, st in self.agents.items() if st.partition not in keep]


def scopes_of(st: AgentState) -> Iterator[str]:
    """The agent's scope and its agent×tool scopes."""
    yield st.scope
    yield from st.tool_scopes.values()
