"""Breaker states by scope, with an index of each agent's tool scopes.

Authz of a call that names no tool must see every enforcing tool scope that could guard
the agent's call (``agent:A/tool:*``, tenant-prefixed ones, cross-agent ``tool:*``);
scanning every state per request would make that O(states). :class:`BreakerStates` is a
``dict`` (reads stay plain dict lookups) whose writes keep that index.

>>> from breakers.state_machine import BreakerState
>>> states = BreakerStates()
>>> states["agent:a/tool:shell"] = BreakerState("agent:a/tool:shell", "open")
>>> states["tool:db"] = BreakerState("tool:db", "closed")
>>> sorted(states.tool_scopes("a", None))
['agent:a/tool:shell', 'tool:db']
>>> del states["agent:a/tool:shell"]
>>> sorted(states.tool_scopes("a", None))
['tool:db']

A gateway request that names no tenant is judged against the agent's own scopes under every
tenant prefix (omitting ``X-Tenant`` must dodge nothing), so those are indexed too:

>>> states["tenant:acme/agent:a"] = BreakerState("tenant:acme/agent:a", "forced_open")
>>> sorted(states.tenant_agent_scopes("a", None))
['tenant:acme/agent:a']
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .scope import ScopeError, parse_scope
from .state_machine import BreakerState

_CROSS = None  # index key of the cross-agent tool scopes (``tool:X``, ``tenant:T/tool:X``)


def _index_key(scope: str) -> tuple[bool, str | None, str | None, str | None]:
    """(is a tool scope, agent or None, tenant or None, tool or None) of a scope string."""
    try:
        s = parse_scope(scope)
    except ScopeError:
        return False, None, None, None
    return s.tool is not None, s.agent, s.tenant, s.tool


class BreakerStates(dict[str, BreakerState]):
    """``scope -> BreakerState``, indexing tool scopes by agent (see the module docstring)."""

    def __init__(self, items: Mapping[str, BreakerState] | Iterable[tuple[str, BreakerState]] = ()) -> None:
        super().__init__()
        self._tools: dict[str | None, dict[str, str | None]] = {}
        #: tenant-prefixed agent and agent×tool scopes, by agent: scope -> (tenant, tool or None)
        self._tenant_agent: dict[str, dict[str, tuple[str, str | None]]] = {}
        #: called with (scope, new state or None when removed) after every write: the engine's evaluator
        #: hears of states set by operators, probes and other workers (``clear`` does not call it)
        self.on_write: Callable[[str, BreakerState | None], None] | None = None
        self.update(items)

    def _add(self, scope: str) -> None:
        is_tool, agent, tenant, tool = _index_key(scope)
        if is_tool:
            self._tools.setdefault(agent, {})[scope] = tenant
        if agent is not None and tenant is not None:
            self._tenant_agent.setdefault(agent, {})[scope] = (tenant, tool)

    def _drop(self, scope: str) -> None:
        is_tool, agent, tenant, _ = _index_key(scope)
        for index, key, wanted in ((self._tools, agent, is_tool),
                                   (self._tenant_agent, agent, agent is not None and tenant is not None)):
            if not wanted:
                continue
            bucket = index.get(key)  # type: ignore[attr-defined]
            if bucket is not None:
                bucket.pop(scope, None)
                if not bucket:
                    del index[key]  # type: ignore[attr-defined]

    def __setitem__(self, scope: str, state: BreakerState) -> None:
        if scope not in self:
            self._add(scope)
        super().__setitem__(scope, state)
        if self.on_write is not None:
            self.on_write(scope, state)

    def __delitem__(self, scope: str) -> None:
        super().__delitem__(scope)
        self._drop(scope)
        if self.on_write is not None:
            self.on_write(scope, None)

    def pop(self, scope: str, *default: Any) -> Any:  # type: ignore[override]
        present = scope in self
        if present:
            self._drop(scope)
        out = super().pop(scope, *default)
        if present and self.on_write is not None:
            self.on_write(scope, None)
        return out

    def popitem(self) -> tuple[str, BreakerState]:
        scope, state = super().popitem()
        self._drop(scope)
        if self.on_write is not None:
            self.on_write(scope, None)
        return scope, state

    def setdefault(self, scope: str, default: BreakerState) -> BreakerState:  # type: ignore[override]
        if scope not in self:
            self[scope] = default
        return self[scope]

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for scope, state in dict(*args, **kwargs).items():
            self[scope] = state

    def clear(self) -> None:
        super().clear()
        self._tools.clear()
        self._tenant_agent.clear()

    def tool_scopes(self, agent: str, tenant: str | None) -> Iterator[str]:
        """Every recorded tool scope that can guard a call of ``agent``: the agent's own
        (any tenant prefix) and the cross-agent ones (un-prefixed, or of ``tenant``)."""
        yield from self._tools.get(agent, ())
        for scope, scope_tenant in self._tools.get(_CROSS, {}).items():
            if scope_tenant is None or scope_tenant == tenant:
                yield scope

    def agent_scopes(self, agent: str) -> Iterator[str]:
        """Every recorded scope bound to ``agent``: ``agent:A``, its tool scopes, tenant-prefixed ones.

        >>> states = BreakerStates({"agent:a": BreakerState("agent:a"), "tool:db": BreakerState("tool:db"),
        ...                         "tenant:t/agent:a/tool:x": BreakerState("tenant:t/agent:a/tool:x")})
        >>> sorted(states.agent_scopes("a"))
        ['agent:a', 'tenant:t/agent:a/tool:x']
        """
        own = f"agent:{agent}"
        if own in self:
            yield own
        yield from self._tools.get(agent, ())
        for scope, (_, tool) in self._tenant_agent.get(agent, {}).items():
            if tool is None:
                yield scope

    def has_tenant_scopes(self, agent: str) -> bool:
        """Does any tenant-prefixed scope name ``agent``? (cheap pre-check for the hot path)"""
        return agent in self._tenant_agent

    def tenant_agent_scopes(self, agent: str, tool: str | None) -> Iterator[str]:
        """The agent's tenant-prefixed scopes (agent, and agent×``tool``) under every tenant: what
        guards a call of ``agent`` that names no tenant."""
        for scope, (_, scope_tool) in self._tenant_agent.get(agent, {}).items():
            if scope_tool is None or scope_tool == tool:
                yield scope


def tool_scopes_of(states: Mapping[str, BreakerState], agent: str, tenant: str | None) -> Iterator[str]:
    """:meth:`BreakerStates.tool_scopes` for any mapping (a plain dict is scanned)."""
    if isinstance(states, BreakerStates):
        yield from states.tool_scopes(agent, tenant)
        return
    for scope in states:
        is_tool, a, t, _ = _index_key(scope)
        if is_tool and (a == agent or (a is None and t in (None, tenant))):
            yield scope


def tenant_agent_scopes_of(states: Mapping[str, BreakerState], agent: str, tool: str | None) -> Iterator[str]:
    """:meth:`BreakerStates.tenant_agent_scopes` for any mapping (a plain dict is scanned)."""
    if isinstance(states, BreakerStates):
        yield from states.tenant_agent_scopes(agent, tool)
        return
    for scope in states:
        _, a, t, s_tool = _index_key(scope)
        if a == agent and t is not None and (s_tool is None or s_tool == tool):
            yield scope
