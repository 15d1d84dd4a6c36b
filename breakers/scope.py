"""Breaker scopes: parse, format, validate, expand and glob-match scope strings.

Grammar (DESIGN.md)::

    scope  := [ "tenant:" T "/" ] body
    body   := "global" | "agent:" A | "tool:" N | "agent:" A "/tool:" N

The tenant-level scope is written ``tenant:<t>/global``; the short form ``tenant:<t>`` is
accepted by :func:`parse_scope` and canonicalised (use :func:`canonical` on any scope that
comes from outside, e.g. a URL path, before using it as a key).

Identifier rules (one place, :func:`validate_id`):

* 1..128 characters (``MAX_ID_LEN``);
* agent ids and tool names may contain quotes, spaces, backslashes, tabs, newlines, colons
  and slashes (real traces carry tool names with spaces/newlines), but never NUL, other C0
  control characters or DEL: those are what log-injection and terminal escapes are made of;
* the substring ``/tool:`` is reserved as the agent/tool separator, so neither an agent id
  nor a tool name may contain it. Parsing splits ``agent:...`` at the LAST ``/tool:``; with
  the rule above that split is unambiguous. (Without it ``agent:a/tool:b`` could be the
  agent ``a/tool:b`` or agent ``a`` × tool ``b``: we refuse to create the first.)
* a tenant may not contain ``/`` (it ends at the first ``/``).

>>> str(parse_scope("tenant:acme/agent:bot 1/tool:shell"))
'tenant:acme/agent:bot 1/tool:shell'
>>> parse_scope("agent:a:b/c/tool:x").agent
'a:b/c'
>>> scopes_for("a", "shell", None)
('agent:a/tool:shell', 'agent:a', 'tool:shell', 'global')
"""
from __future__ import annotations

import functools

import fnmatch
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import unquote

MAX_ID_LEN = 128
MAX_SCOPE_LEN = 3 * MAX_ID_LEN + 32
GLOBAL = "global"
_SEP = "/tool:"
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
KINDS = ("global", "tenant", "agent", "tool", "agent_tool")


class ScopeError(ValueError):
    """A scope string or identifier is malformed."""


def validate_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid agent/tool/tenant identifier, else raise ScopeError.

    >>> validate_id("agent", 'say "hi"\\n')
    'say "hi"\\n'
    >>> validate_id("agent", "")
    Traceback (most recent call last):
    ...
    breakers.scope.ScopeError: agent id is empty
    """
    if not isinstance(value, str):
        raise ScopeError(f"{kind} id must be a string")
    if not value:
        raise ScopeError(f"{kind} id is empty")
    if len(value) > MAX_ID_LEN:
        raise ScopeError(f"{kind} id longer than {MAX_ID_LEN} characters")
    if _BAD_CHARS.search(value):
        raise ScopeError(f"{kind} id contains a control character")
    if kind == "tenant":
        if "/" in value:
            raise ScopeError("tenant id contains '/'")
    elif _SEP in value:
        raise ScopeError(f"{kind} id contains the reserved separator '/tool:'")
    return value


def is_valid_id(kind: str, value: object) -> bool:
    """True when :func:`validate_id` accepts ``value``.

    >>> is_valid_id("tool", "a/tool:b"), is_valid_id("tenant", "a/b"), is_valid_id("agent", "a/b")
    (False, False, True)
    """
    try:
        validate_id(kind, value)
    except ScopeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Scope:
    """A parsed scope. ``agent``/``tool`` None means "any"; all None means global."""

    tenant: str | None = None
    agent: str | None = None
    tool: str | None = None

    def __post_init__(self) -> None:
        for kind, value in (("tenant", self.tenant), ("agent", self.agent), ("tool", self.tool)):
            if value is not None:
                validate_id(kind, value)

    @property
    def kind(self) -> str:
        """One of ``KINDS``: global, tenant, agent, tool, agent_tool."""
        if self.agent is not None:
            return "agent_tool" if self.tool is not None else "agent"
        if self.tool is not None:
            return "tool"
        return "tenant" if self.tenant is not None else "global"

    def __str__(self) -> str:
        return format_scope(self.tenant, self.agent, self.tool)


def format_scope(tenant: str | None = None, agent: str | None = None, tool: str | None = None) -> str:
    """Format the canonical scope string (no validation; see :class:`Scope` for that).

    >>> format_scope("acme", None, None)
    'tenant:acme/global'
    """
    if agent is not None:
        body = f"agent:{agent}{_SEP}{tool}" if tool is not None else f"agent:{agent}"
    elif tool is not None:
        body = f"tool:{tool}"
    else:
        body = GLOBAL
    if tenant is None:
        return body
    return f"tenant:{tenant}/{body}"


def _split(text: str, pattern: bool) -> tuple[str | None, str | None, str | None]:
    """Split a scope (or scope pattern) into tenant, agent, tool without validating ids."""
    if not isinstance(text, str):
        raise ScopeError("scope must be a string")
    if not text:
        raise ScopeError("scope is empty")
    if len(text) > MAX_SCOPE_LEN:
        raise ScopeError(f"scope longer than {MAX_SCOPE_LEN} characters")
    tenant: str | None = None
    rest = text
    if rest.startswith("tenant:"):
        head, slash, rest = rest[len("tenant:"):].partition("/")
        tenant = head
        if not slash:
            rest = GLOBAL  # short form 'tenant:<t>'
        if not tenant:
            raise ScopeError("tenant id is empty")
    if rest == GLOBAL:
        return tenant, None, None
    if rest.startswith("agent:"):
        body = rest[len("agent:"):]
        idx = body.rfind(_SEP)
        if idx < 0:
            return tenant, body, None
        return tenant, body[:idx], body[idx + len(_SEP):]
    if rest.startswith("tool:"):
        return tenant, None, rest[len("tool:"):]
    raise ScopeError(f"unknown scope form {rest[:40]!r} (expected global, agent:, tool:)")


@functools.lru_cache(maxsize=65536)
def parse_scope(text: str) -> Scope:
    """Parse and validate a scope string; raise ScopeError on garbage.

    >>> parse_scope("tenant:acme").kind
    'tenant'
    >>> parse_scope("agent:")
    Traceback (most recent call last):
    ...
    breakers.scope.ScopeError: agent id is empty
    """
    tenant, agent, tool = _split(text, pattern=False)
    return Scope(tenant, agent, tool)


def canonical(text: str) -> str:
    """Validate ``text`` and return its canonical spelling (e.g. for URL path parameters)."""
    return str(parse_scope(text))


def canonical_tool(name: object, case_fold: bool = False) -> str:
    """THE canonical spelling of a tool name from outside (header, token claim, event, scope, glob).

    Every input that names a tool goes through this function exactly once, so a policy glob,
    a breaker scope, an ``X-Tool`` header and a trace event's ``tool`` agree on what a name is:

    * percent-decoded exactly once (UTF-8, strict): ``sh%65ll`` is ``shell``; a literal ``%``
      is written ``%25``. An undecodable escape (``%ff``) is an error, never a replacement
      character;
    * with ``case_fold`` (policy ``tool_names: {case_fold: true}``) Unicode case-folded
      (``str.casefold``): ``Shell`` and ``SHELL`` are ``shell``. Off by default: real tool names
      are CamelCase and a deployment may have ``Search`` and ``search`` as different tools;
    * the result is validated with :func:`validate_id` (the raw input too): a name that decodes
      to a control character or to the reserved ``/tool:`` separator raises ScopeError.

    Not idempotent (``%2565`` → ``%65`` → ``e``): never apply it to a name that already went
    through it (stored scopes, states, canonical events).

    >>> canonical_tool("sh%65ll"), canonical_tool("SHELL", case_fold=True), canonical_tool("100%25")
    ('shell', 'shell', '100%')
    >>> canonical_tool("x%2Ftool%3Ay")
    Traceback (most recent call last):
    ...
    breakers.scope.ScopeError: tool id contains the reserved separator '/tool:'
    """
    return _canonical_tool(validate_id("tool", name), case_fold)


@lru_cache(maxsize=65536)
def _canonical_tool(name: str, case_fold: bool) -> str:
    if "%" in name:
        try:
            name = unquote(name, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise ScopeError("tool id has a percent-escape that is not UTF-8") from None
    if case_fold:
        name = name.casefold()
    return validate_id("tool", name)


def input_scope(text: str, case_fold: bool = False) -> str:
    """Validate a scope typed by a person or sent in a URL (already transport-decoded once) and
    return its canonical spelling, its tool name through :func:`canonical_tool`.

    Agent and tenant ids are taken verbatim: ``agent:bot%41`` is the agent ``bot%41``.

    >>> input_scope("agent:bot%41/tool:Sh%65ll", case_fold=True), input_scope("tenant:acme")
    ('agent:bot%41/tool:shell', 'tenant:acme/global')
    """
    s = parse_scope(text)
    if s.tool is None:
        return str(s)
    return format_scope(s.tenant, s.agent, canonical_tool(s.tool, case_fold))


def is_valid_scope(text: str) -> bool:
    """True when :func:`parse_scope` accepts ``text``."""
    try:
        parse_scope(text)
    except ScopeError:
        return False
    return True


@lru_cache(maxsize=8192)
def scopes_for(agent: str, tool: str | None = None, tenant: str | None = None) -> tuple[str, ...]:
    """All scopes guarding a call, most specific first.

    Without a tenant: agent×tool, agent, tool, global. With a tenant the tenant-prefixed
    agent×tool, agent, tool and tenant-level scopes come first, then the un-prefixed ones,
    so an operator kill switch on ``tool:shell`` or ``agent:x`` cannot be dodged by sending
    a tenant header. ``tool=None`` (agent-level checks) leaves out the tool scopes. Raises
    ScopeError for invalid ids. Cached (hot path of authz).

    >>> scopes_for("a", "t", "acme")[:4]
    ('tenant:acme/agent:a/tool:t', 'tenant:acme/agent:a', 'tenant:acme/tool:t', 'tenant:acme/global')
    """
    validate_id("agent", agent)
    if tool is not None:
        validate_id("tool", tool)
    plain = (
        (f"agent:{agent}{_SEP}{tool}", f"agent:{agent}", f"tool:{tool}", GLOBAL)
        if tool is not None
        else (f"agent:{agent}", GLOBAL)
    )
    if tenant is None or tenant == "":
        return plain
    validate_id("tenant", tenant)
    prefix = f"tenant:{tenant}/"
    return tuple(prefix + s for s in plain) + plain


def is_drill_scope(scope: str, prefix: str = "drill-") -> bool:
    """True when the scope's agent id starts with the drill prefix.

    >>> is_drill_scope("agent:drill-7/tool:shell")
    True
    """
    try:
        agent = parse_scope(scope).agent
    except ScopeError:
        return False
    return agent is not None and agent.startswith(prefix)


# ---------------------------------------------------------------- patterns

@dataclass(frozen=True, slots=True)
class ScopePattern:
    """A policy scope pattern: a scope whose components are fnmatch globs.

    Matching is per component, so ``agent:*`` matches agent scopes only (not agent×tool
    ones, which a plain fnmatch on the whole string would also match because ``*`` eats
    ``/``). A pattern without a tenant prefix matches only un-prefixed scopes; use
    ``tenant:*/...`` for tenant scopes. ``*`` alone matches every scope, ``tenant:acme/*``
    every scope of tenant ``acme``.

    >>> ScopePattern.parse("agent:*").matches("agent:x/tool:y")
    False
    >>> ScopePattern.parse("tenant:acme/agent:*/tool:payments.*").matches("tenant:acme/agent:b/tool:payments.refund")
    True
    """

    text: str
    tenant: str | None
    agent: str | None
    tool: str | None
    any_body: bool = False

    @classmethod
    def parse(cls, text: str) -> "ScopePattern":
        """Parse a pattern; raise ScopeError if it is not scope-shaped.

        ``*`` matches every scope; ``tenant:<glob>/*`` every scope of matching tenants.
        """
        if text == "*":
            return cls(text, None, None, None, any_body=True)
        if isinstance(text, str) and text.startswith("tenant:") and text.endswith("/*"):
            tenant = text[len("tenant:"):-2]
            if not tenant or "/" in tenant or _BAD_CHARS.search(tenant):
                raise ScopeError(f"bad tenant part in pattern {text!r}")
            return cls(text, tenant, None, None, any_body=True)
        tenant, agent, tool = _split(text, pattern=True)
        for kind, value in (("tenant", tenant), ("agent", agent), ("tool", tool)):
            if value is not None and (not value or _BAD_CHARS.search(value)):
                raise ScopeError(f"{kind} part of pattern {text!r} is empty or has control characters")
        return cls(text, tenant, agent, tool)

    def with_canonical_tool(self, case_fold: bool) -> "ScopePattern":
        """This pattern with its tool glob through :func:`canonical_tool` (the policy's spelling rule).

        >>> ScopePattern.parse("agent:*/tool:Sh%65ll").with_canonical_tool(True).tool
        'shell'
        """
        if self.tool is None:
            return self
        return replace(self, tool=canonical_tool(self.tool, case_fold))

    def matches(self, scope: str | Scope) -> bool:
        """True when ``scope`` (string or Scope) matches this pattern."""
        s = scope if isinstance(scope, Scope) else parse_scope(scope)
        if self.any_body:
            return self.text == "*" or (s.tenant is not None and fnmatch.fnmatchcase(s.tenant, self.tenant or ""))
        return (
            _comp(self.tenant, s.tenant)
            and _comp(self.agent, s.agent)
            and _comp(self.tool, s.tool)
        )


def _comp(pattern: str | None, value: str | None) -> bool:
    if pattern is None or value is None:
        return pattern is None and value is None
    return fnmatch.fnmatchcase(value, pattern)


def scope_matches(pattern: str, scope: str) -> bool:
    """Convenience: does ``scope`` match the policy ``pattern``?

    >>> scope_matches("tool:shell", "tool:shell"), scope_matches("tool:db.write*", "tool:db.read")
    (True, False)
    """
    return ScopePattern.parse(pattern).matches(scope)
