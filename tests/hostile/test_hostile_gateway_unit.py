"""Issue #15 (5), unit level (no broker): gateway semantics that fail closed.

Attacks, each through :class:`streams.worker.http.api.Api` (what ``/v1/authz``, ``/v1/introspect`` and
the operator routes call) or the one decode/ingest path of events:

* tool-name spelling games: ``Shell``, ``SHELL``, ``sh%65ll`` against a ``shell`` glob or scope. Tool
  names are canonicalised once (:func:`breakers.scope.canonical_tool`: percent-decoded once; case-folded
  with the policy's ``tool_names.case_fold``) for headers, token claims, events, operator scopes and globs;
* duplicate identity headers: 400, counted as ``authz_requests_total{decision="bad_request"}``;
* 20 tokens of a half-open scope with 5 probe slots: introspection takes a slot per active answer;
* a scope decoded twice on the server (``force-open agent:bot%41`` opened ``agent:botA``).
"""

from __future__ import annotations

import asyncio
import functools
import time

import orjson
import pytest
from helpers.hostile import INVALID_ID, event
from helpers.support import REPO

from breakers.introspect import KeyRing, issue_token
from breakers.operators import OperatorRegistry, generate_token, hash_token
from breakers.policy import Policy, load_policy, parse_policy
from breakers.scope import ScopeError
from breakers.state_machine import HALF_OPEN, BreakerState, force_open
from streams.contract.decode import decode_message
from streams.engine.monitor import Change, Monitor
from streams.worker.http.api import Api
from streams.worker.metrics import Metrics

DEFAULT = load_policy(REPO / "deploy" / "policy" / "default.yaml")


@functools.cache
def folding() -> Policy:
    """The shipped policy with ``tool_names: {case_fold: true}``."""
    return parse_policy((REPO / "deploy" / "policy" / "default.yaml").read_text() + "\ntool_names: {case_fold: true}\n")

SECRET = "k" * 40
OPERATOR = generate_token()
SPELLINGS_ENCODED = ["sh%65ll", "%73%68%65%6c%6c", "%73hell"]
SPELLINGS_CASED = ["Shell", "SHELL", "sHeLl", "SH%45LL", "Sh%65ll"]


def _api(policy: Policy, states: dict[str, BreakerState] | None = None,
         metrics: Metrics | None = None) -> tuple[Api, list[Change]]:
    monitor = Monitor(policy)
    monitor.states.update(states or {})
    published: list[Change] = []

    async def publish(change: Change) -> None:
        published.append(change)

    ops = OperatorRegistry.from_config([{"name": "op", "role": "operator", "token_sha256": hash_token(OPERATOR)}])
    keys = KeyRing.from_config([{"kid": "k1", "alg": "HS256", "secret": SECRET}])
    return Api(monitor, ops, keys, publish, known=lambda: True,
               observe_authz=metrics.observe_authz if metrics else None), published


def _authz(api: Api, agent: str, tool: str | None, tenant: str | None = None) -> int:
    return asyncio.run(api.authz(agent, tool, tenant)).status


def _escalated(scope: str) -> BreakerState:
    return BreakerState(scope, "escalated", since=time.time(), reason="unit: escalated")


def _forced(scope: str, policy: Policy = DEFAULT) -> BreakerState:
    now = time.time()
    return force_open(BreakerState.initial(scope, now, policy), "ann", "unit: kill switch", now)[0]


# ------------------------------------------------------------------ one canonical spelling
@pytest.mark.parametrize("spelling", SPELLINGS_ENCODED)
def test_percent_encoded_consequential_tool_is_still_consequential(spelling: str) -> None:
    """default policy: ``shell`` is consequential; an escalated agent must not reach it as ``sh%65ll``."""
    api, _ = _api(DEFAULT, {"agent:esc": _escalated("agent:esc")})
    assert _authz(api, "esc", "shell") == 403
    assert _authz(api, "esc", spelling) == 403, spelling
    assert _authz(api, "esc", "search") == 200  # not consequential: allowed while escalated


@pytest.mark.parametrize("spelling", SPELLINGS_ENCODED + SPELLINGS_CASED)
def test_case_variants_are_consequential_when_the_policy_folds_case(spelling: str) -> None:
    api, _ = _api(folding(), {"agent:esc": _escalated("agent:esc")})
    assert _authz(api, "esc", spelling) == 403, spelling
    assert _authz(api, "esc", "Search") == 200


def test_an_escalated_agent_cannot_dodge_approval_by_naming_no_tool() -> None:
    api, _ = _api(DEFAULT, {"agent:esc": _escalated("agent:esc")})
    r = asyncio.run(api.authz("esc", None, None))
    assert r.status == 403 and "X-Tool" in r.body["reason"], r.body


def test_without_case_folding_case_variants_are_other_tools() -> None:
    """The documented default: real tool names are CamelCase, ``Shell`` is not ``shell``."""
    api, _ = _api(DEFAULT, {"agent:esc": _escalated("agent:esc")})
    assert _authz(api, "esc", "Shell") == 200


@pytest.mark.parametrize("spelling", SPELLINGS_ENCODED)
def test_percent_encoded_tool_cannot_dodge_a_forced_open_agent_tool_scope(spelling: str) -> None:
    api, _ = _api(DEFAULT, {"agent:x/tool:shell": _forced("agent:x/tool:shell")})
    assert _authz(api, "x", spelling) == 403
    assert _authz(api, "x", spelling, "acme") == 403


def test_an_operator_scope_is_spelled_like_the_headers() -> None:
    """force-open ``agent:x/tool:Shell`` with case folding guards ``shell`` / ``SHELL`` / ``sh%65ll``."""
    api, _ = _api(folding())
    r = asyncio.run(api.action(f"Bearer {OPERATOR}", "agent:x/tool:Shell", "force-open",
                               orjson.dumps({"reason": "unit: spelled in CamelCase"})))
    assert r.status == 200, r.body
    assert r.body["breaker"]["scope"] == "agent:x/tool:shell"
    for spelling in ["shell", "SHELL", "sh%65ll", "Sh%45ll"]:
        assert _authz(api, "x", spelling) == 403, spelling
    assert _authz(api, "x", "search") == 200


@pytest.mark.parametrize("tool", ["sh%00ell", "x%2Ftool%3Ay", "sh%ffell", "%1b"])
def test_a_tool_that_decodes_to_an_invalid_name_is_denied(tool: str) -> None:
    api, _ = _api(DEFAULT)
    r = asyncio.run(api.authz("x", tool, None))
    assert r.status == 403 and r.body["state"] == "invalid", r.body


@pytest.mark.parametrize("tool", ["sh%00ell", "x%2Ftool%3Ay", "x%2FTOOL%3Ay", "sh%ffell"])
def test_an_event_whose_tool_decodes_to_an_invalid_name_is_a_dead_letter(tool: str) -> None:
    events, rejects = decode_message(b"a", orjson.dumps(event("a", tool=tool)), max_bytes=1 << 20)
    assert events == [] and [r.reason for r in rejects] == [INVALID_ID], (tool, rejects)


@pytest.mark.parametrize("fold, raw, scope", [
    (False, "sh%65ll", "agent:ev/tool:shell"),
    (True, "SH%45LL", "agent:ev/tool:shell"),
    (True, "Shell", "agent:ev/tool:shell"),
    (False, "Shell", "agent:ev/tool:Shell"),
], ids=["decoded", "decoded-folded", "folded", "camel-kept"])
def test_events_count_under_the_scope_authz_checks(fold: bool, raw: str, scope: str) -> None:
    """An event's tool enters scopes in its canonical spelling: the breaker that trips on it is the
    breaker authz consults for the same ``X-Tool`` (no split counts, no unguarded twin scope)."""
    mon = Monitor(folding() if fold else DEFAULT)
    events, rejects = decode_message(b"ev", orjson.dumps([event("ev", tool=raw) for _ in range(3)]),
                                     max_bytes=1 << 20)
    assert rejects == []
    mon.ingest(0, events)
    st = mon.agents["ev"]
    assert list(st.tools) == [scope.rsplit("/tool:", 1)[1]], list(st.tools)
    assert list(st.tool_scopes.values()) == [scope]
    assert mon.evaluation_errors == 0


def test_policy_globs_are_canonical_too() -> None:
    p = parse_policy("tool_names: {case_fold: true}\nconsequential_tools: ['Payments.*', 'Sh%65ll']\n"
                     "budgets:\n- {name: b, signal: incident_count, objective: 1, scopes: ['agent:*/tool:DB.%2A']}\n")
    assert all(p.is_consequential(p.canonical_tool(t)) for t in ("payments.refund", "PAYMENTS.Refund", "SHELL"))
    assert [b.name for b in p.budgets_for("agent:a/tool:db.write")] == ["b"]
    with pytest.raises(ValueError):
        parse_policy("consequential_tools: ['sh%00ell']")


def test_canonical_tool_decodes_exactly_once() -> None:
    from breakers.scope import canonical_tool, input_scope
    assert canonical_tool("sh%2565ll") == "sh%65ll"  # one decoding: a literal % is written %25
    assert canonical_tool("100%") == "100%"  # a lone % is no escape
    with pytest.raises(ScopeError):
        canonical_tool("sh%ffell")
    assert input_scope("agent:bot%41/tool:sh%65ll") == "agent:bot%41/tool:shell"


# ------------------------------------------------------------------ duplicate identity headers
def test_duplicate_identity_headers_are_counted_as_bad_request() -> None:
    from streams.worker.http.api import BAD_REQUEST
    metrics = Metrics()
    api, _ = _api(DEFAULT, metrics=metrics)
    r = api.authz_bad_request("duplicate X-Agent-Id header")
    assert r.status == 400 and r.body["allow"] is False
    assert metrics.authz_counts[BAD_REQUEST] == 1
    assert b'tripwire_authz_requests_total{decision="bad_request"} 1.0' in metrics.exposition()


# ------------------------------------------------------------------ introspection takes probe slots
def _half_open(scope: str, slots: int) -> BreakerState:
    now = time.time()
    return BreakerState(scope, HALF_OPEN, since=now, reason="unit: cooled down", probes_required=slots,
                        probes_remaining=slots, updated_at=now)


def test_introspection_activates_no_more_tokens_than_probe_slots() -> None:
    scope = "agent:ho/tool:shell"
    api, published = _api(DEFAULT, {scope: _half_open(scope, 5)})
    now = api.monitor.clock.now()
    tokens = [issue_token(SECRET, "k1", "HS256", "ho", "shell", now=now - 1) for _ in range(20)]
    answers = [asyncio.run(api.introspect(orjson.dumps({"token": t}), "application/json",
                                          f"Bearer {OPERATOR}")).body for t in tokens]
    active = [a for a in answers if a["active"]]
    assert len(active) == 5, [a["active"] for a in answers]
    assert all(a["tripwire_probe"] is True and a["tripwire_state"] == HALF_OPEN for a in active)
    assert api.monitor.states[scope].probes_remaining == 0
    assert [c.state.probes_remaining for c in published] == [4, 3, 2, 1, 0]  # every slot taken is published
    assert _authz(api, "ho", "shell") == 403  # and authz sees the slots gone


def test_authz_and_introspection_share_the_probe_slots() -> None:
    scope = "agent:ho2"
    api, _ = _api(DEFAULT, {scope: _half_open(scope, 2)})
    assert _authz(api, "ho2", "search") == 200
    tok = issue_token(SECRET, "k1", "HS256", "ho2", "search", now=api.monitor.clock.now() - 1)
    body = orjson.dumps({"token": tok})
    assert asyncio.run(api.introspect(body, "application/json", f"Bearer {OPERATOR}")).body["active"] is True
    assert asyncio.run(api.introspect(body, "application/json", f"Bearer {OPERATOR}")).body == {"active": False}
    assert _authz(api, "ho2", "search") == 403


# ------------------------------------------------------------------ one decoding of a scope in a URL
@pytest.mark.parametrize("typed", ["agent:bot%41", "agent:bot%2541", "tenant:t%2Fx/agent:a"])
def test_a_scope_from_the_url_is_not_decoded_a_second_time(typed: str) -> None:
    """The router already decoded the path once (what ``tripwire breakers force-open`` encoded once)."""
    api, _ = _api(DEFAULT)
    r = asyncio.run(api.action(f"Bearer {OPERATOR}", typed, "force-open", orjson.dumps({"reason": "unit"})))
    assert r.status == 200, r.body
    assert r.body["breaker"]["scope"] == typed
    assert set(api.monitor.states) == {typed}
    shown = asyncio.run(api.show_breaker(f"Bearer {OPERATOR}", typed)).body
    assert shown["scope"] == typed and shown["recorded"] is True


def test_the_cli_encodes_a_scope_once() -> None:
    from urllib.parse import unquote

    from streams.cli.breakers import scope_path
    path = scope_path("agent:bot%41", "force-open")
    assert path == "/v1/breakers/agent%3Abot%2541/force-open"
    assert unquote(path.split("/")[3]) == "agent:bot%41"  # one decoding gives back what was typed


# ---------------------------------------------------------------- omitting X-Tenant
@pytest.mark.parametrize("held", ["tenant:acme/agent:a", "tenant:acme/agent:a/tool:shell"])
@pytest.mark.parametrize("plain_dict", [False, True])
def test_omitting_the_tenant_header_does_not_dodge_a_tenant_prefixed_breaker_of_the_agent(held, plain_dict):
    """Attack: a tenant-prefixed agent (or agent×tool) scope is force-opened; the client leaves out
    ``X-Tenant``. Before the fix ``scopes_for(a, shell, None)`` never named the tenant scope: 200."""
    from breakers.authz import decide
    from breakers.policy import parse_policy
    from breakers.state_machine import BreakerState
    from breakers.state_table import BreakerStates

    states = {held: BreakerState(held, "forced_open", reason="kill switch")}
    if not plain_dict:
        states = BreakerStates(states)
    policy = parse_policy("{}")
    d = decide(states, "a", "shell", None, 0.0, policy)
    assert not d.allow and d.scope == held
    assert decide(states, "a", "shell", "acme", 0.0, policy).allow is False
    assert decide(states, "b", "shell", None, 0.0, policy).allow  # another agent is not affected
    assert decide(states, "a", "shell", "other", 0.0, policy).allow  # agent a *of tenant other*
