"""Gateway authorisation: may this agent call this tool now? (pure, hot path)

Every scope of :func:`breakers.scope.scopes_for` is checked; a scope without a state is
closed. Rules, first deny wins (most specific scope first):

* open / forced_open → deny;
* half_open → allow only while ``probes_remaining > 0``; the Decision then has ``probe=True``
  and names the half-open ``scope``: the caller must take the slot with
  :func:`breakers.state_machine.probe` (and publish the new state) before forwarding the call,
  and later report the call's outcome with ``record_probe_result``. With several workers
  answering authz, each decrements its own copy until the compacted state catches up, so up to
  (workers × N) probes can pass: probes are a limit on blast radius, not an exact count;
* escalated → deny consequential tools (policy ``consequential_tools``) unless an approval is
  unexpired; other tools are allowed; a call naming no tool is treated as consequential;
* shadow / closed → allow (shadow never enforces);
* ``known=False`` (state not recovered / unavailable) → the policy's ``fail_mode``;
* a request naming no tenant is also judged against the agent's tenant-prefixed scopes under every
  tenant (``tenant:T/agent:A``, ``tenant:T/agent:A/tool:X``): leaving ``X-Tenant`` out must not dodge
  a breaker of that agent. A request naming tenant U is agent A *of U* (identity is (tenant, agent),
  set by the gateway like ``X-Agent-Id``), judged on U's scopes and the un-prefixed ones;
* no tool named (``tool=None``) → judged on the agent scopes, and denied when any tool
  scope that can guard the agent's calls is enforcing (``agent:A/tool:*`` under any tenant
  prefix, cross-agent ``tool:*``): without a tool the gateway could be forwarding a call to
  exactly that tool, so the interlock fails closed and the reason asks for ``X-Tool``;
* the tool name is canonicalised first, once (:meth:`Policy.canonical_tool`: percent-decoded
  once, case-folded when the policy's ``tool_names.case_fold`` is on), exactly as trace
  events' tools, operator scopes and the policy's globs are: ``sh%65ll`` or (folding) ``SHELL``
  is judged as ``shell``;
* invalid agent/tool/tenant ids (also a tool that decodes to an invalid one, e.g. ``%00``)
  → deny (400-class input, reported as 403 to gateways).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .policy import Policy
from .scope import ScopeError, scopes_for
from .state_machine import CLOSED, ENFORCING, ESCALATED, FORCED_OPEN, HALF_OPEN, OPEN, SHADOW, BreakerState
from .state_table import BreakerStates, tenant_agent_scopes_of, tool_scopes_of

#: which allowing state a decision reports when several scopes allow (the most restrictive wins)
_ALLOW_RANK = {CLOSED: 0, SHADOW: 1, ESCALATED: 2, HALF_OPEN: 3}


#: readable ASCII for the symbols breaker reasons use (``breakers.evaluate``), for the HTTP header
HEADER_ASCII = str.maketrans({"×": "x", "≥": ">=", "≤": "<=", "→": "->", "λ": "lambda", "−": "-", "…": "..."})


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    status: int  # 200 | 403
    reason: str
    state: str  # deciding breaker state, or 'unknown' / 'invalid'
    scope: str | None
    probe: bool = False  # allowed as a half-open probe: take the slot (state_machine.probe)

    @property
    def headers(self) -> dict[str, str]:
        """``X-Tripwire-Reason`` / ``X-Tripwire-State`` for the HTTP answer (reason one line, ASCII-safe:
        the symbols reasons use read as ASCII, anything else is backslash-escaped).

        >>> Decision(False, 403, "burn 14.4× over 1h (>14.4); P(X≥3 | λ=0.1)", "open", None).headers["X-Tripwire-Reason"]
        'burn 14.4x over 1h (>14.4); P(X>=3 | lambda=0.1)'
        """
        reason = self.reason.translate(HEADER_ASCII).encode("ascii", "backslashreplace").decode("ascii")
        return {"X-Tripwire-Reason": reason.replace("\n", " ")[:300], "X-Tripwire-State": self.state}


_CLOSED_OK = Decision(True, 200, "closed", "closed", None)


def decide(states: Mapping[str, BreakerState], agent: str, tool: str | None, tenant: str | None,
           now: float, policy: Policy, known: bool = True) -> Decision:
    """Decide one gateway call. See the module docstring for the rules.

    >>> from breakers.policy import parse_policy
    >>> p = parse_policy("consequential_tools: ['shell']")
    >>> decide({"agent:a": BreakerState("agent:a", "open", reason="r")}, "a", "ls", None, 0, p).status
    403
    >>> esc = {"agent:a": BreakerState("agent:a", "escalated", reason="r")}
    >>> decide(esc, "a", "sh%65ll", None, 0, p).reason
    'escalated: consequential tool needs approval; r'
    """
    try:
        if tool is not None:
            tool = policy.canonical_tool(tool)
        scopes = scopes_for(agent, tool, tenant or None)
    except ScopeError as e:
        return Decision(False, 403, f"invalid request: {e}", "invalid", None)
    if not known:
        if policy.fail_mode == "open":
            return Decision(True, 200, "breaker state unknown; fail-open", "unknown", None)
        return Decision(False, 403, "breaker state unknown; fail-closed", "unknown", None)
    best: Decision | None = None
    if not tenant and (not isinstance(states, BreakerStates) or states.has_tenant_scopes(agent)):
        # no tenant named: the agent's breakers under any tenant prefix apply (omitting X-Tenant dodges none)
        scopes = (*scopes, *tenant_agent_scopes_of(states, agent, tool))
    for scope in scopes:
        st = states.get(scope)
        if st is None:
            continue
        s = st.state
        if s == CLOSED or s == SHADOW:
            if s == SHADOW and best is None:
                best = Decision(True, 200, f"shadow: {st.reason}", s, scope)
            continue
        if s == OPEN or s == FORCED_OPEN:
            return Decision(False, 403, f"{s}: {st.reason}", s, scope)
        if s == HALF_OPEN:
            if st.probes_remaining <= 0:
                return Decision(False, 403, "half_open: no probe calls left, awaiting results", s, scope)
            if best is None or _ALLOW_RANK[best.state] < _ALLOW_RANK[HALF_OPEN]:
                best = Decision(True, 200, f"half_open probe ({st.probes_remaining} left)", s, scope, probe=True)
            continue
        if s == ESCALATED:
            if tool is None or policy.is_consequential(tool):  # no tool named: it could be a consequential one
                approval = st.active_approval(now)
                if approval is None:
                    what = "consequential tool" if tool is not None else "no tool named (send X-Tool); any tool"
                    return Decision(False, 403, f"escalated: {what} needs approval; {st.reason}", s, scope)
                if best is None or _ALLOW_RANK[best.state] < _ALLOW_RANK[ESCALATED]:
                    best = Decision(True, 200, f"escalated: approved by {approval.actor}", s, scope)
            elif best is None or _ALLOW_RANK[best.state] < _ALLOW_RANK[ESCALATED]:
                best = Decision(True, 200, "escalated: tool not consequential", s, scope)
            continue
        return Decision(False, 403, f"unrecognised state {s!r}", "invalid", scope)  # defensive
    if tool is None:
        for scope in tool_scopes_of(states, agent, tenant or None):
            st = states.get(scope)
            if st is not None and st.state in ENFORCING:
                return Decision(False, 403, f"no tool named and tool scope {scope} is {st.state}: "
                                "send X-Tool to be judged per tool", st.state, scope)
    return best or _CLOSED_OK
