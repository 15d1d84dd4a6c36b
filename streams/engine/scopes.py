"""Typed scopes, built once: the engine never re-parses a scope string on the hot path.

Breaker states and every published record are keyed by scope *strings*; to find the counts
behind a scope the engine needs its parts (tenant, agent, tool). Agent and agent×tool scopes
are built from ids the schema already validated, once, when an agent's state or one of its
tool slots is created (:meth:`ScopeIndex.intern`); cross-agent scopes once per (tool, tenant)
an event counts for (:func:`cross_scopes_of`). A string from elsewhere (a breaker state read
from the topic, an operator's URL) is parsed once and cached, bounded.

>>> index = ScopeIndex()
>>> index.intern(None, "bot", "shell")
'agent:bot/tool:shell'
>>> index.get("agent:bot/tool:shell").tool, index.get("tenant:acme/global").kind, index.get("agent:")
('shell', 'tenant', None)
>>> [str(s) for s in cross_scopes_of("shell", "acme")]
['tenant:acme/tool:shell', 'tenant:acme/global', 'tool:shell', 'global']
"""

from __future__ import annotations

from collections.abc import Iterable

from breakers.scope import Scope, ScopeError, format_scope, parse_scope


def trusted_scope(tenant: str | None, agent: str | None, tool: str | None) -> Scope:
    """A :class:`~breakers.scope.Scope` of ids validated already (at the schema boundary), not checked again."""
    scope = object.__new__(Scope)
    object.__setattr__(scope, "tenant", tenant)  # a frozen dataclass: set as its own __init__ would
    object.__setattr__(scope, "agent", agent)
    object.__setattr__(scope, "tool", tool)
    return scope


def cross_scopes_of(tool: str | None, tenant: str | None) -> tuple[Scope, ...]:
    """The cross-agent scopes an event of (tool, tenant) counts for, most specific first.

    Raises ScopeError for an invalid tool or tenant (e.g. one read from an old checkpoint).
    """
    tenant = tenant or None
    out = []
    for t in ((tenant, None) if tenant is not None else (None,)):
        if tool is not None:
            out.append(Scope(t, None, tool))
        out.append(Scope(t, None, None))
    return tuple(out)


class ScopeIndex:
    """Scope string -> typed scope: interned for this worker's agents, parsed once for the rest."""

    __slots__ = ("_interned", "_parsed", "max_parsed")

    def __init__(self, max_parsed: int = 100_000) -> None:
        self._interned: dict[str, Scope] = {}
        self._parsed: dict[str, Scope | None] = {}
        self.max_parsed = max_parsed

    def intern(self, tenant: str | None, agent: str | None, tool: str | None) -> str:
        """Register the scope of validated ids; return its string (the key of its breaker state)."""
        text = format_scope(tenant, agent, tool)
        self._interned[text] = trusted_scope(tenant, agent, tool)
        return text

    def add(self, scope: Scope) -> str:
        """Register a typed scope built elsewhere; return its string."""
        text = str(scope)
        self._interned[text] = scope
        return text

    def forget(self, texts: Iterable[str]) -> None:
        """Drop interned scopes (their agent was evicted or moved to another worker)."""
        for text in texts:
            self._interned.pop(text, None)

    def get(self, text: str) -> Scope | None:
        """The typed scope of ``text``, or None when it does not parse."""
        hit = self._interned.get(text)
        if hit is not None:
            return hit
        try:
            return self._parsed[text]
        except KeyError:
            pass
        try:
            hit = parse_scope(text)
        except ScopeError:
            hit = None
        if len(self._parsed) >= self.max_parsed:
            self._parsed.clear()
        self._parsed[text] = hit
        return hit

    def agent_of(self, text: str) -> str | None:
        """The agent of an agent or agent×tool scope; None for cross-agent (or invalid) scopes."""
        hit = self.get(text)
        return hit.agent if hit is not None else None
