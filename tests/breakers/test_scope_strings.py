from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from breakers.scope import (
    MAX_ID_LEN, Scope, ScopeError, ScopePattern, canonical, format_scope, is_drill_scope, parse_scope,
    scope_matches, scopes_for,
)


@pytest.mark.parametrize("text,tenant,agent,tool,kind", [
    ("global", None, None, None, "global"),
    ("agent:a", None, "a", None, "agent"),
    ("tool:shell", None, None, "shell", "tool"),
    ("agent:a/tool:shell", None, "a", "shell", "agent_tool"),
    ("tenant:acme/global", "acme", None, None, "tenant"),
    ("tenant:acme/agent:a/tool:t", "acme", "a", "t", "agent_tool"),
    ("tenant:acme/tool:t", "acme", None, "t", "tool"),
    ('agent:he said "hi" \\ ok', None, 'he said "hi" \\ ok', None, "agent"),
    ("agent:multi\nline", None, "multi\nline", None, "agent"),
    ("agent:a:b/c/d/tool:x/y:z", None, "a:b/c/d", "x/y:z", "agent_tool"),
    ("agent:tenant:x", None, "tenant:x", None, "agent"),
    ("tool:Todoist Search\nTasks", None, None, "Todoist Search\nTasks", "tool"),
])
def test_parse_valid(text, tenant, agent, tool, kind):
    s = parse_scope(text)
    assert (s.tenant, s.agent, s.tool, s.kind) == (tenant, agent, tool, kind)
    assert str(s) == text


def test_tenant_short_form_is_canonicalised():
    assert parse_scope("tenant:acme") == Scope(tenant="acme")
    assert canonical("tenant:acme") == "tenant:acme/global"


@pytest.mark.parametrize("text", [
    "", "agent:", "tool:", "tenant:/agent:a", "agent:a/tool:", "Agent:a", "agents:a", "globalx", "tenant:a/",
    "agent:" + "x" * (MAX_ID_LEN + 1), "agent:nul\x00byte", "agent:esc\x1b[31m", "tool:del\x7f",
    "agent:a/tool:b/tool:c",  # agent 'a/tool:b' would contain the reserved separator
    "tenant:ac me\x01/global", "x" * 10_000,
])
def test_parse_rejects_garbage(text):
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_parse_rejects_non_string():
    with pytest.raises(ScopeError):
        parse_scope(None)  # type: ignore[arg-type]


def test_scope_constructor_validates():
    with pytest.raises(ScopeError):
        Scope(agent="")
    with pytest.raises(ScopeError):
        Scope(tenant="a/b")
    with pytest.raises(ScopeError):
        Scope(agent="x/tool:y")


def test_scopes_for_without_tenant():
    assert scopes_for("a", "shell") == ("agent:a/tool:shell", "agent:a", "tool:shell", "global")
    assert scopes_for("a", None) == ("agent:a", "global")
    assert scopes_for("a", "t", "") == scopes_for("a", "t", None)


def test_scopes_for_with_tenant_keeps_unprefixed_kill_switches():
    got = scopes_for("a", "shell", "acme")
    assert got == (
        "tenant:acme/agent:a/tool:shell", "tenant:acme/agent:a", "tenant:acme/tool:shell", "tenant:acme/global",
        "agent:a/tool:shell", "agent:a", "tool:shell", "global",
    )
    assert all(parse_scope(s) for s in got)


@pytest.mark.parametrize("agent,tool,tenant", [("", "t", None), ("a", "", None), ("a", "t", "x/y"),
                                               ("a\x00", "t", None), ("a", "t" * 129, None)])
def test_scopes_for_rejects_bad_ids(agent, tool, tenant):
    with pytest.raises(ScopeError):
        scopes_for(agent, tool, tenant)


@pytest.mark.parametrize("pattern,scope,expected", [
    ("agent:*", "agent:x", True),
    ("agent:*", "agent:x/tool:y", False),
    ("agent:*/tool:*", "agent:x/tool:y", True),
    ("agent:*/tool:*", "agent:x", False),
    ("tool:shell", "tool:shell", True),
    ("tool:shell", "agent:a/tool:shell", False),
    ("tool:db.write*", "tool:db.write_rows", True),
    ("tool:db.write*", "tool:db.read", False),
    ("agent:*", "tenant:acme/agent:x", False),
    ("tenant:acme/agent:*", "tenant:acme/agent:x", True),
    ("tenant:acme/agent:*", "tenant:other/agent:x", False),
    ("tenant:*/agent:*/tool:payments.*", "tenant:t/agent:b/tool:payments.refund", True),
    ("tenant:acme/*", "tenant:acme/tool:x", True),
    ("tenant:acme/*", "agent:x", False),
    ("*", "tenant:z/agent:q/tool:w", True),
    ("global", "global", True),
    ("global", "agent:x", False),
    ("agent:drill-*", "agent:drill-7", True),
    ("agent:*", "agent:a/b c:d", True),
])
def test_pattern_matching(pattern, scope, expected):
    assert scope_matches(pattern, scope) is expected


@pytest.mark.parametrize("bad", ["", "agent:", "bogus", "tenant:/*", "tool:\x01"])
def test_bad_patterns(bad):
    with pytest.raises(ScopeError):
        ScopePattern.parse(bad)


def test_drill_scope():
    assert is_drill_scope("agent:drill-1")
    assert is_drill_scope("tenant:t/agent:drill-x/tool:shell")
    assert not is_drill_scope("agent:prod-1")
    assert not is_drill_scope("tool:drill-x")
    assert not is_drill_scope("garbage")


_id_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
ids = st.text(_id_chars, min_size=1, max_size=MAX_ID_LEN).filter(lambda s: "/tool:" not in s)


def _valid(kind, v):
    try:
        Scope(**{kind: v})
        return True
    except ScopeError:
        return False


@given(tenant=st.none() | ids.filter(lambda s: _valid("tenant", s)),
       agent=st.none() | ids.filter(lambda s: _valid("agent", s)),
       tool=st.none() | ids.filter(lambda s: _valid("tool", s)))
def test_round_trip(tenant, agent, tool):
    s = Scope(tenant, agent, tool)
    assert parse_scope(str(s)) == s
    assert format_scope(tenant, agent, tool) == str(s)


@given(st.text(max_size=300))
def test_parse_never_crashes_unexpectedly(text):
    try:
        s = parse_scope(text)
    except ScopeError:
        return
    assert canonical(str(s)) == str(s)
