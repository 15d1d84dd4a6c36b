"""Issue #13, property: arbitrary unicode ids never crash the decision path.

Any agent id, tool and tenant (control characters, the reserved ``/tool:`` separator, ``/``,
very long strings, any plane of unicode) goes decode → Monitor.ingest → Monitor.evaluate →
authz (``breakers.authz.decide`` and the HTTP-less ``streams.worker.http.api.Api.authz``) without an
exception escaping; and an event the decoder accepts only carries ids the scope grammar
accepts, so nothing downstream can trip over them.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from breakers.authz import decide
from breakers.introspect import KeyRing
from breakers.operators import OperatorRegistry
from breakers.policy import load_policy
from breakers.scope import MAX_ID_LEN, ScopeError, validate_id
from breakers.state_machine import BreakerState, force_open
from helpers.hostile import INVALID_ID
from streams.worker.http.api import Api
from streams.contract.decode import REJECT_REASONS, decode_message
from streams.engine.monitor import Monitor
from helpers.support import REPO

POLICY = load_policy(REPO / "deploy" / "policy" / "default.yaml")
MAX_BYTES = 256 * 1024

PROPS = settings(
    max_examples=200,
    deadline=None,
    database=None,  # write nothing into the shared checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_controls = st.sampled_from([chr(c) for c in (*range(0x20), 0x7F)])
_specials = st.sampled_from(["/tool:", "/", ":", "tool:", "agent:", "tenant:", "global", "\\", '"', " ", "*",
                             "\u2028", "\u202e", "\ufeff", "🤖"])
_pieces = st.text(max_size=20) | _controls | _specials
#: ids: plain text, pieces glued together (control chars, separators, scope syntax), very long strings
ids = (
    st.text(min_size=1, max_size=40)
    | st.text(min_size=1, max_size=40, alphabet=st.characters(exclude_categories=("Cc", "Cs")))
    | st.lists(st.text(min_size=1, max_size=8, alphabet=st.characters(exclude_categories=("Cc", "Cs"))) | _specials,
               min_size=1, max_size=6).map("".join)
    | st.text(max_size=3)
    | st.lists(_pieces, min_size=1, max_size=8).map("".join)
    | st.text(min_size=MAX_ID_LEN - 2, max_size=MAX_ID_LEN + 2)
    | st.text(min_size=200, max_size=2000)
    | st.sampled_from(["/tool:", "a/tool:b", "x/tool:", "\x00", "\x1b[2J", "acme/evil", "t\tab", "n\nl", "c\rr"])
)
KINDS = ["tool_call", "monitor_flag", "incident", "refusal", "llm_call", "escalation"]
EXTRAS = {"monitor_flag": {"severity": "high", "monitor": "guard", "action": "blocked"},
          "incident": {"severity": "critical"}}


def _valid(kind: str, value: object) -> bool:
    try:
        validate_id(kind, value)
    except ScopeError:
        return False
    return True


def _api(monitor: Monitor) -> Api:
    async def publish(change: object) -> None:
        return None

    return Api(monitor, OperatorRegistry.from_config([]), KeyRing.from_config([]), publish, known=lambda: True)


@PROPS
@given(agent=ids, tool=st.none() | ids, tenant=st.none() | st.none() | ids, kind=st.sampled_from(KINDS),
       batch=st.booleans(), keyed=st.booleans())
def test_any_ids_flow_through_decode_monitor_evaluate_and_authz(agent: str, tool: str | None,
                                                                  tenant: str | None, kind: str, batch: bool,
                                                                  keyed: bool) -> None:
    now = time.time()
    ev = {"schema_version": "1", "event_id": "p-1", "ts": int(now * 1000), "agent_id": agent, "kind": kind,
          **EXTRAS.get(kind, {})}
    if tool is None and kind == "tool_call":
        tool = "shell"
    if tool is not None:
        ev["tool"] = tool
    if tenant is not None:
        ev["tenant"] = tenant
    good = {"schema_version": "1", "event_id": "p-0", "ts": int(now * 1000), "agent_id": "good-agent",
            "kind": "tool_call", "tool": "shell"}
    value = orjson.dumps([good, ev] if batch else ev)  # str ids from st.text() are always valid UTF-8
    key = agent.encode() if keyed and not batch else None

    events, rejects = decode_message(key, value, max_bytes=MAX_BYTES)

    for r in rejects:
        assert r.reason in REJECT_REASONS, r
    for e in events:  # whatever the decoder lets through, the scope grammar accepts
        assert _valid("agent", e.agent_id), e.agent_id
        assert e.tool is None or _valid("tool", e.tool), e.tool
        assert e.tenant is None or _valid("tenant", e.tenant), e.tenant
    if batch:
        assert events and events[0].event_id == "p-0", "the good neighbour was lost"
    ok_len = all(v is None or 1 <= len(v) <= MAX_ID_LEN for v in (agent, tenant))
    tool_ok_len = tool is None or 1 <= len(tool) <= MAX_ID_LEN or (kind != "tool_call" and len(tool) > MAX_ID_LEN)
    if ok_len and tool_ok_len and not (_valid("agent", agent) and (tool is None or len(tool) > MAX_ID_LEN
                                                                   or _valid("tool", tool))
                                       and (tenant is None or _valid("tenant", tenant))):
        assert [r.reason for r in rejects] == [INVALID_ID], [(r.reason, r.detail) for r in rejects]

    monitor = Monitor(POLICY)
    monitor.ingest(0, events)
    monitor.evaluate(now)
    monitor.evaluate(now + 2)
    # an enforcing tool scope somewhere, so authz without a tool header has something to consider
    scope = "agent:good-agent/tool:shell"
    monitor.states[scope] = force_open(BreakerState.initial(scope, now, POLICY), "ann", "prop", now)[0]
    clock = monitor.clock.now()
    api = _api(monitor)
    for a, t, te in {(agent, tool, tenant), (agent, None, tenant), (agent, tool, None), (agent, None, None),
                     ("good-agent", tool, tenant)}:
        d = decide(monitor.states, a, t, te, clock, POLICY)
        assert d.status in (200, 403)
        r = asyncio.run(api.authz(a, t, te))
        assert r.status in (200, 400, 403), r
        assert isinstance(r.headers.get("X-Tripwire-Reason", ""), str)
        assert r.headers.get("X-Tripwire-Reason", "").isascii()
