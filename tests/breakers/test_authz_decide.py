from __future__ import annotations

import pytest

from breakers.authz import Decision, decide
from breakers.policy import parse_policy
from breakers.state_machine import Approval, BreakerState
from breakers.state_table import BreakerStates

from helpers.breakers import T0

POLICY = parse_policy("consequential_tools: ['payments.*', 'shell', 'email.send', 'db.write*']\n")
POLICY_FAIL_OPEN = parse_policy("fail_mode: open\n")


def st(scope, state, **kw):
    return BreakerState(scope, state, reason=kw.pop("reason", f"{state} because"), **kw)


APPROVED = [Approval("ann", "ok", T0 + 100)]
EXPIRED = [Approval("ann", "ok", T0 - 1)]


@pytest.mark.parametrize("scope,state,kw,tool,allow,dstate", [
    # no state at all → closed
    (None, None, {}, "shell", True, "closed"),
    ("agent:a", "closed", {}, "shell", True, "closed"),
    # open / forced_open on any guarding scope deny
    ("agent:a", "open", {}, "ls", False, "open"),
    ("agent:a/tool:shell", "open", {}, "shell", False, "open"),
    ("agent:a/tool:shell", "open", {}, "ls", True, "closed"),  # other tool of the agent unaffected
    ("tool:shell", "forced_open", {}, "shell", False, "forced_open"),
    ("global", "forced_open", {}, "ls", False, "forced_open"),
    ("agent:b", "open", {}, "ls", True, "closed"),  # other agent
    # half-open: probes
    ("agent:a", "half_open", {"probes_remaining": 2}, "ls", True, "half_open"),
    ("agent:a", "half_open", {"probes_remaining": 0}, "ls", False, "half_open"),
    # escalated: consequential needs approval
    ("agent:a", "escalated", {}, "shell", False, "escalated"),
    ("agent:a", "escalated", {}, "payments.refund", False, "escalated"),
    ("agent:a", "escalated", {}, "db.write_rows", False, "escalated"),
    ("agent:a", "escalated", {}, "ls", True, "escalated"),
    ("agent:a", "escalated", {"approvals": APPROVED}, "shell", True, "escalated"),
    ("agent:a", "escalated", {"approvals": EXPIRED}, "shell", False, "escalated"),
    ("tool:email.send", "escalated", {}, "email.send", False, "escalated"),
    # shadow never denies
    ("agent:a", "shadow", {}, "shell", True, "shadow"),
    ("global", "shadow", {}, "payments.x", True, "shadow"),
])
def test_decision_table(scope, state, kw, tool, allow, dstate):
    states = {scope: st(scope, state, **kw)} if scope else {}
    d = decide(states, "a", tool, None, T0, POLICY)
    assert (d.allow, d.state) == (allow, dstate), d
    assert d.status == (200 if allow else 403)
    if not allow:
        assert d.scope == scope and d.reason


def test_probe_flag_only_for_half_open():
    d = decide({"agent:a": st("agent:a", "half_open", probes_remaining=1)}, "a", "ls", None, T0, POLICY)
    assert d.probe and d.scope == "agent:a"
    assert not decide({}, "a", "ls", None, T0, POLICY).probe


def test_any_deny_wins_over_allows():
    states = {"agent:a": st("agent:a", "shadow"), "agent:a/tool:ls": st("agent:a/tool:ls", "half_open",
                                                                          probes_remaining=3),
              "global": st("global", "open")}
    d = decide(states, "a", "ls", None, T0, POLICY)
    assert not d.allow and d.scope == "global"


def test_tenant_scopes_and_unprefixed_kill_switch():
    states = {"tenant:acme/agent:a": st("tenant:acme/agent:a", "open")}
    assert not decide(states, "a", "ls", "acme", T0, POLICY).allow
    assert decide(states, "a", "ls", "other", T0, POLICY).allow
    assert not decide(states, "a", "ls", None, T0, POLICY).allow  # omitting the tenant header dodges nothing
    states = {"agent:a": st("agent:a", "forced_open")}
    assert not decide(states, "a", "ls", "acme", T0, POLICY).allow  # tenant header cannot dodge it
    states = {"tenant:acme/global": st("tenant:acme/global", "open")}
    assert not decide(states, "zz", "ls", "acme", T0, POLICY).allow


def test_unknown_state_uses_fail_mode():
    d = decide({}, "a", "ls", None, T0, POLICY, known=False)
    assert (d.allow, d.status, d.state) == (False, 403, "unknown") and "fail-closed" in d.reason
    d = decide({}, "a", "ls", None, T0, POLICY_FAIL_OPEN, known=False)
    assert (d.allow, d.status, d.state) == (True, 200, "unknown")


@pytest.mark.parametrize("agent,tool,tenant", [("", "ls", None), ("a", "", None), ("a\x00", "ls", None),
                                               ("x" * 129, "ls", None), ("a", "ls", "t/x"),
                                               ("a/tool:b", "ls", None)])
def test_invalid_identity_denied(agent, tool, tenant):
    d = decide({}, agent, tool, tenant, T0, POLICY)
    assert not d.allow and d.state == "invalid" and d.status == 403


def test_weird_but_valid_ids_work():
    agent = 'bot "7"\\ with spaces:and/slashes\nnewline'
    states = {f"agent:{agent}": st(f"agent:{agent}", "open")}
    assert not decide(states, agent, "ls", None, T0, POLICY).allow
    assert decide(states, "bot", "ls", None, T0, POLICY).allow


def test_headers_are_single_line_ascii():
    d = Decision(False, 403, "open: ünïcode\nline two", "open", "agent:a")
    h = d.headers
    assert "\n" not in h["X-Tripwire-Reason"] and h["X-Tripwire-Reason"].isascii()
    assert h["X-Tripwire-State"] == "open"


# ---------------------------------------------------------------- no X-Tool: fail closed on tool scopes

@pytest.mark.parametrize("scope,state,allow", [
    ("agent:a/tool:shell", "forced_open", False),
    ("agent:a/tool:shell", "open", False),
    ("agent:a/tool:shell", "half_open", False),
    ("agent:a/tool:shell", "escalated", False),
    ("tenant:acme/agent:a/tool:shell", "open", False),  # the agent's scope under any tenant prefix
    ("tool:shell", "open", False),  # a cross-agent tool scope guards this agent's calls too
    ("agent:a/tool:shell", "shadow", True),
    ("agent:a/tool:shell", "closed", True),
    ("agent:b/tool:shell", "open", True),  # another agent's tool scope
    ("tenant:other/tool:shell", "open", True),  # another tenant's cross-agent tool scope
])
@pytest.mark.parametrize("table", [dict, BreakerStates])
def test_no_tool_is_denied_while_a_tool_scope_of_the_agent_enforces(scope, state, allow, table):
    states = table({scope: st(scope, state)})
    d = decide(states, "a", None, None, T0, POLICY)
    assert d.allow is allow, d
    if not allow:
        assert d.scope == scope and "X-Tool" in d.reason and d.status == 403


def test_no_tool_still_judged_on_the_agent_scope_first():
    states = BreakerStates({"agent:a": st("agent:a", "open", reason="harm"),
                            "agent:a/tool:shell": st("agent:a/tool:shell", "open")})
    d = decide(states, "a", None, None, T0, POLICY)
    assert (d.allow, d.scope, d.reason) == (False, "agent:a", "open: harm")


def test_state_table_index_follows_every_write():
    states = BreakerStates()
    states["agent:a/tool:x"] = st("agent:a/tool:x", "open")
    states.setdefault("tool:y", st("tool:y", "open"))
    states.update({"agent:a": st("agent:a", "closed")})
    assert sorted(states.tool_scopes("a", None)) == ["agent:a/tool:x", "tool:y"]
    states.pop("tool:y")
    del states["agent:a/tool:x"]
    assert list(states.tool_scopes("a", None)) == []
    states["not a scope"] = st("not a scope", "open")  # a forged record: stored, never indexed, never raises
    assert list(states.tool_scopes("a", None)) == []
    states.clear()
    assert not states and list(states.tool_scopes("a", None)) == []
