"""Issue #13, unit level (no broker): ids the scope grammar refuses are refused at decode time.

An agent id, tool or tenant with a control character, the reserved ``/tool:`` separator (agent,
tool) or a ``/`` (tenant) used to pass the schema and then raise ScopeError in the worker's
evaluation loop. Every ingest path decodes with the same rules: Kafka ``agent-traces``
(:func:`streams.contract.decode.decode_message` / :class:`streams.engine.pipeline.TracePipeline`),
``POST /v1/traces`` (:func:`streams.worker.http.ingest.parse_body`) and OTLP
(:class:`streams.worker.otlp_bridge.OtlpTranslator`). Also here: ``/v1/authz`` without ``X-Tool``
(:meth:`streams.worker.http.api.Api.authz`) must not ignore an enforcing tool scope of the agent.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time

import orjson
import pytest

from breakers.introspect import KeyRing
from breakers.operators import OperatorRegistry
from breakers.policy import load_policy
from breakers.scope import validate_id
from breakers.state_machine import BreakerState, force_open
from helpers.hostile import INVALID_ID, allowed, calls, otlp_request, otlp_span, poison, poisoned
from streams.worker.http.api import Api
from streams.contract.decode import REJECT_REASONS, decode_message
from streams.worker.http.ingest import parse_body
from streams.engine.monitor import Monitor
from streams.worker.otlp_bridge import OtlpTranslator
from streams.engine.pipeline import TracePipeline
from streams.settings import Settings
from helpers.support import REPO

MAX = 256 * 1024
RUN = "unit"
POLICY = load_policy(REPO / "deploy" / "policy" / "default.yaml")


@pytest.fixture(autouse=True)
def no_tripwire_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() must see defaults only."""
    for name in list(os.environ):
        if name.startswith("TRIPWIRE_"):
            monkeypatch.delenv(name)


def _id(case: tuple[str, str]) -> str:
    return f"{case[0]}={case[1]!r}"


POISON = poison(RUN)
ALLOWED = allowed(RUN)


def test_the_poison_list_is_what_the_scope_grammar_refuses() -> None:
    """Guard for the test data itself: every poison id is refused by validate_id, every allowed one accepted."""
    kinds = {"agent_id": "agent", "tool": "tool", "tenant": "tenant"}
    for field, value in POISON:
        with pytest.raises(ValueError):
            validate_id(kinds[field], value)
    for field, value in ALLOWED:
        assert validate_id(kinds[field], value) == value


def test_invalid_id_is_a_known_reject_reason() -> None:
    assert INVALID_ID in REJECT_REASONS


@pytest.mark.parametrize("case", POISON, ids=_id)
@pytest.mark.parametrize("kind", ["monitor_flag", "incident", "tool_call"])
def test_poison_id_in_a_single_event_is_invalid_id(case: tuple[str, str], kind: str) -> None:
    field, value = case
    ev = poisoned("agent-1", field, value, kind)
    key = ev["agent_id"].encode()
    events, rejects = decode_message(key, orjson.dumps(ev), max_bytes=MAX)
    assert events == [], f"{field}={value!r} was accepted"
    assert [(r.reason, r.index) for r in rejects] == [(INVALID_ID, None)], [(r.reason, r.detail) for r in rejects]


@pytest.mark.parametrize("case", POISON, ids=_id)
def test_poison_id_inside_a_batch_costs_only_itself(case: tuple[str, str]) -> None:
    field, value = case
    good = calls("agent-1", 2)
    bad = poisoned("agent-1", field, value)
    # a batch keyed by its agent (poison in tool/tenant) or, for a poison agent id, an un-keyed batch
    key = None if field == "agent_id" else b"agent-1"
    events, rejects = decode_message(key, orjson.dumps([good[0], bad, good[1]]), max_bytes=MAX)
    assert [(r.reason, r.index) for r in rejects] == [(INVALID_ID, 1)], f"{field}={value!r}: {rejects}"
    assert [e.event_id for e in events] == [good[0]["event_id"], good[1]["event_id"]]
    assert orjson.loads(rejects[0].element)[field] == value  # the DLQ payload is the offending element


@pytest.mark.parametrize("case", ALLOWED, ids=_id)
def test_tab_newline_cr_and_plain_slashes_stay_allowed(case: tuple[str, str]) -> None:
    field, value = case
    ev = poisoned("agent-1", field, value, "tool_call")
    events, rejects = decode_message(None, orjson.dumps(ev), max_bytes=MAX)
    assert rejects == [], [(r.reason, r.detail) for r in rejects]
    assert getattr(events[0], field) == value


def test_pipeline_dead_letters_poison_and_the_monitor_keeps_evaluating() -> None:
    """What the worker does per message: the poison is a dead letter, the monitor never sees it."""
    monitor = Monitor(POLICY)
    pipe = TracePipeline(Settings(), sink=monitor.ingest)
    dead = []
    for offset, (field, value) in enumerate(POISON):
        ev = poisoned("agent-1", field, value)
        dead += pipe.process(ev["agent_id"].encode(), orjson.dumps(ev), topic="agent-traces", partition=0,
                             offset=offset)
    good = calls("agent-1", 3)
    batch = [good[0], poisoned("agent-1", "tool", "x/tool:y"), good[1], poisoned("agent-1", "tenant", "a/b"), good[2]]
    dead += pipe.process(b"agent-1", orjson.dumps(batch), topic="agent-traces", partition=1, offset=99)
    assert [d.reason for d in dead] == [INVALID_ID] * (len(POISON) + 2)
    assert pipe.counters.rejected[INVALID_ID] == len(POISON) + 2
    assert pipe.counters.events["tool_call"] == 3
    record = orjson.loads(dead[-1].value)
    assert record["reason"] == INVALID_ID and record["source"]["index"] == 3
    assert orjson.loads(base64.b64decode(record["payload_b64"]))["tenant"] == "a/b"
    assert set(monitor.agents) == {"agent-1"}
    monitor.evaluate(time.time())  # used to raise ScopeError for the poison scopes
    monitor.evaluate(time.time() + 10)


def test_http_ingest_refuses_poison_lines_as_invalid_id() -> None:
    lines = [calls("http-agent", 1)[0]] + [poisoned("http-agent", f, v) for f, v in POISON] + calls("http-agent", 1)
    body = b"\n".join(orjson.dumps(x) for x in lines)
    ok, rejected = parse_body(body, "application/x-ndjson", max_event_bytes=MAX)
    assert [e["event_id"] for e in ok] == [lines[0]["event_id"], lines[-1]["event_id"]]
    assert [(r["line"], r["reason"]) for r in rejected] == [(i, INVALID_ID) for i in range(2, len(POISON) + 2)]
    ok, rejected = parse_body(orjson.dumps(lines), "application/json", max_event_bytes=MAX)
    assert len(ok) == 2 and {r["reason"] for r in rejected} == {INVALID_ID}


def test_otlp_spans_with_poison_ids_are_dead_lettered_as_invalid_id() -> None:
    spans = [
        otlp_span("otlp-good"),
        otlp_span("otlp\x01bad"),                                  # service.name with a control character
        otlp_span("otlp-good", tool="a/tool:b"),                   # reserved separator in the tool
        otlp_span("otlp-good", tenant__id="acme/x"),               # '/' in the tenant
        otlp_span("otlp-bad/tool:shell", op="apply_guardrail", tool=None,
                  gen_ai__guardrail__action="blocked"),   # a guardrail flag of a poison agent
        otlp_span("otlp-good", tool="search"),
    ]
    out, letters = OtlpTranslator(Settings()).translate(None, orjson.dumps(otlp_request(spans)), topic="otlp",
                                                          partition=0, offset=0)
    assert [m.headers["tripwire-reason"] for m in letters] == [INVALID_ID.encode()] * 4
    assert [orjson.loads(m.value)["reason"] for m in letters] == [INVALID_ID] * 4
    forwarded = []
    for m in out:
        doc = orjson.loads(m.value)
        forwarded += doc if isinstance(doc, list) else [doc]
    assert len(forwarded) == 2 and {e["agent_id"] for e in forwarded} == {"otlp-good"}


# ------------------------------------------------------------------ /v1/authz without X-Tool (HTTP-less)
def _api(states: dict[str, BreakerState]) -> Api:
    monitor = Monitor(POLICY)
    monitor.states.update(states)

    async def publish(change: object) -> None:
        return None

    return Api(monitor, OperatorRegistry.from_config([]), KeyRing.from_config([]), publish, known=lambda: True)


def _forced(scope: str) -> BreakerState:
    now = time.time()
    return force_open(BreakerState.initial(scope, now, POLICY), "ann", "unit: suspicious", now)[0]


@pytest.mark.parametrize("scope, agent, tenant", [
    ("agent:x/tool:shell", "x", None),
    ("tenant:acme/agent:x/tool:shell", "x", "acme"),
    ("tool:shell", "x", None),
], ids=["agent-tool", "tenant-agent-tool", "cross-agent-tool"])
def test_authz_without_tool_header_is_denied_by_an_enforcing_tool_scope(scope: str, agent: str,
                                                                         tenant: str | None) -> None:
    api = _api({scope: _forced(scope)})
    r = asyncio.run(api.authz(agent, None, tenant))
    assert r.status == 403, r.body
    reason = r.body["reason"]
    assert "tool" in reason.lower() and ("x-tool" in reason.lower() or scope in reason), reason
    assert "tool" in r.headers["X-Tripwire-Reason"].lower(), r.headers
    # with the tool header: judged on that tool as before
    assert asyncio.run(api.authz(agent, "shell", tenant)).status == 403
    assert asyncio.run(api.authz(agent, "search", tenant)).status == 200


def test_authz_without_tool_header_is_allowed_when_every_scope_of_the_agent_is_closed() -> None:
    api = _api({"agent:x/tool:shell": _forced("agent:x/tool:shell"),
                "agent:y/tool:shell": BreakerState.initial("agent:y/tool:shell", time.time(), POLICY),
                "agent:ab/tool:shell": _forced("agent:ab/tool:shell"),
                "agent:a/b/tool:shell": _forced("agent:a/b/tool:shell")})
    assert asyncio.run(api.authz("y", None, None)).status == 200
    assert asyncio.run(api.authz("z", None, None)).status == 200
    # agent "a" is not agent "ab" nor agent "a/b": their tool scopes are not its
    assert asyncio.run(api.authz("a", None, None)).status == 200
    assert asyncio.run(api.authz("x", None, "acme")).status == 403  # the un-prefixed agent×tool scope still applies
    api = _api({"agent:x": _forced("agent:x")})
    assert asyncio.run(api.authz("x", None, None)).status == 403  # agent scopes as before


def test_a_checkpoint_of_a_poison_agent_written_before_the_fix_is_not_restored_into_evaluation() -> None:
    """A changelog written by an older worker can hold detector state of a poison agent or tool."""
    from detectors import RollingCounts
    from streams.engine.monitor import AgentState, encode_checkpoint
    from streams.contract.schema import TraceEvent

    new = Monitor(POLICY)
    for agent, tool in (("bad\x01agent", "shell"), ("ok-agent", "x/tool:y"), ("fine-agent", "shell")):
        ev = TraceEvent.model_construct(schema_version="1", event_id=f"c-{agent}", ts=time.time(), agent_id=agent,
                                        kind="tool_call", tool=tool, status="ok", tenant=None, drill_id=None)
        st = AgentState(agent, 0, RollingCounts(new.config), tools={tool: RollingCounts(new.config)})
        st.counts.add_event(ev)
        st.tools[tool].add_event(ev)
        new.restore(agent, encode_checkpoint(st.to_state()))
    assert "fine-agent" in new.agents
    new.set_policy(POLICY)  # a policy reload re-evaluates every restored agent's scopes
    new.evaluate(time.time())
    new.evaluate(time.time() + 10)
