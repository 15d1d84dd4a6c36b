"""OTLP GenAI spans -> schema-v1 events: the mapping table of docs/connect.md, without Kafka."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import orjson
import pytest
from helpers.otlp import load, shifted_to_now, to_proto_bytes

from streams.contract.otlp import OtlpError, decode_request, map_request, map_span
from streams.worker.otlp_bridge import OtlpTranslator
from streams.contract.schema import TraceEvent
from streams.settings import Settings


@pytest.fixture(autouse=True)
def _defaults_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TRIPWIRE_"):
            monkeypatch.delenv(name)


def _by_span(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["event_id"].split(":")[1]: e for e in events}


def test_genai_agent_run_maps_per_semantic_conventions() -> None:
    out = map_request(decode_request(orjson.dumps(load("genai_agent_run"))))
    ev = _by_span(out.events)
    trace = "5b8efff798038103d269b633813fc60c"
    assert set(ev) == {"0000000000000001", "0000000000000002", "0000000000000003", "0000000000000004"}
    for e in out.events:
        TraceEvent.model_validate(e)
        assert e["agent_id"] == "travel-agent-7"          # gen_ai.agent.id beats name and service.name
        assert e["session_id"] == "conv-42"               # gen_ai.conversation.id
        assert e["event_id"].startswith(trace + ":")

    chat = ev["0000000000000001"]
    assert chat["kind"] == "llm_call" and chat["status"] == "ok"
    assert (chat["model"], chat["input_tokens"], chat["output_tokens"]) == ("gpt-4o", 812, 64)
    assert chat["latency_ms"] == 900.0
    assert chat["ts"] == 1_793_491_200_910              # end of the span, epoch ms
    assert chat["attributes"]["gen_ai.provider.name"] == "openai"

    search = ev["0000000000000002"]
    assert (search["kind"], search["tool"], search["status"]) == ("tool_call", "search_flights", "ok")
    assert search["tool_call_id"] == "call_mszuSIzqtI65i1wAUOE8w5H4"
    assert search["latency_ms"] == 350.0

    book = ev["0000000000000003"]                        # span status ERROR + error.type
    assert (book["kind"], book["status"], book["error_type"]) == ("tool_call", "error", "PaymentDeclined")

    flag = ev["0000000000000004"]                        # apply_guardrail, decision deny
    assert flag["kind"] == "monitor_flag"
    assert (flag["action"], flag["monitor"], flag["tool"]) == ("blocked", "pii-filter", "send_email")
    assert "status" not in flag

    assert dict(out.skipped) == {"no_outcome": 1, "guardrail_allowed": 1, "not_genai": 1,
                                 "unsupported_operation": 1}
    assert out.invalid == [] and out.spans == 8


def test_variants_fallbacks_and_tripwire_attributes() -> None:
    out = map_request(decode_request(orjson.dumps(load("variants"))))
    ev = _by_span(out.events)
    assert out.skipped == {} and out.invalid == []

    llm = ev["b7ad6b7169203331"]
    assert llm["agent_id"] == "support-bot"              # gen_ai.agent.name when there is no id
    assert llm["status"] == "error"                      # status code as its enum name
    assert (llm["input_tokens"], llm["output_tokens"]) == (100, 20)   # legacy prompt/completion tokens
    assert llm["attributes"]["gen_ai.provider.name"] == "anthropic"   # legacy gen_ai.system

    flag = ev["b7ad6b7169203332"]
    assert (flag["kind"], flag["action"], flag["monitor"], flag["severity"]) == \
        ("monitor_flag", "modified", "toxicity", "high")

    task = ev["b7ad6b7169203333"]                        # invoke_agent carrying an outcome
    assert task["kind"] == "task_outcome"
    assert (task["outcome"], task["task_id"], task["attempt"], task["intervened"]) == ("failure", "ticket-981", 2, True)

    refusal = ev["c7ad6b7169203334"]
    assert (refusal["kind"], refusal["agent_id"], refusal["should_refuse"]) == ("refusal", "orders-agent", True)

    lookup = ev["c7ad6b7169203335"]                      # no gen_ai.tool.name: from the span name
    assert (lookup["tool"], lookup["tenant"], lookup["agent_id"]) == ("lookup_order", "acme", "orders-agent")


@pytest.mark.parametrize(("decision", "action"), [
    ("deny", "blocked"), ("BLOCKED", "blocked"), ("reject", "blocked"), ("modify", "modified"),
    ("redact", "modified"), ("warn", "warned"), ("flagged", "warned"), ("allow", None), ("pass", None),
    ("unheard-of", "?"),
])
@pytest.mark.parametrize("key", ["gen_ai.security.decision.type", "gen_ai.security.action.type",
                                 "gen_ai.guardrail.action", "gen_ai.guardrail.decision"])
def test_guardrail_decisions(decision: str, action: str | None, key: str) -> None:
    span = _span("apply_guardrail", {key: decision, "gen_ai.agent.id": "a"})
    result = map_span(span, {})
    if action is None:
        assert getattr(result, "reason") == "guardrail_allowed"
    elif action == "?":
        assert getattr(result, "reason") == "guardrail_no_decision"
    else:
        assert isinstance(result, dict) and result["kind"] == "monitor_flag" and result["action"] == action
        assert result["monitor"] == "apply_guardrail x"  # no guardrail name: the span name


def test_skips_and_invalid_spans() -> None:
    assert map_span(_span("execute_tool", {}), {}).reason == "no_agent"  # type: ignore[union-attr]
    nameless = _span("execute_tool", {"gen_ai.agent.id": "a"}, name="run it")
    assert map_span(nameless, {}).reason == "no_tool"  # type: ignore[union-attr]
    assert map_span(_span("create_agent", {"gen_ai.agent.id": "a"}), {}).reason == "unsupported_operation"  # type: ignore[union-attr]
    assert map_span(_span("apply_guardrail", {"gen_ai.agent.id": "a"}), {}).reason == "guardrail_no_decision"  # type: ignore[union-attr]

    out = map_request(decode_request(orjson.dumps(load("invalid_spans"))))
    assert [(i.index, i.detail) for i in out.invalid] == [
        (0, "span has no traceId/spanId"), (1, "tool: String should have at most 128 characters")]
    assert [e["tool"] for e in out.events] == ["fine"]

    future = _span("execute_tool", {"gen_ai.agent.id": "a", "gen_ai.tool.name": "t"})
    future["endTimeUnixNano"] = str(time.time_ns() + 3 * 86_400 * 10**9)
    bad = map_request({"resourceSpans": [{"scopeSpans": [{"spans": [future]}]}]}).invalid
    assert len(bad) == 1 and "future" in bad[0].detail


def test_resource_attributes_and_service_name_fallback() -> None:
    span = _span("chat", {"gen_ai.request.model": "m"})
    ev = map_span(span, {"service.name": "svc-agent", "tenant.id": "t1"})
    assert isinstance(ev, dict) and (ev["agent_id"], ev["tenant"]) == ("svc-agent", "t1")
    ev = map_span(_span("chat", {"gen_ai.agent.id": "span-wins"}), {"gen_ai.agent.id": "resource"})
    assert isinstance(ev, dict) and ev["agent_id"] == "span-wins"


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "otlp_empty"), (b"{oops", "otlp_invalid_json"), (b'{"foo": 1}', "otlp_not_request"),
    (b'  {"resourceSpans": {}}', "otlp_not_request"), (b"\xff\xfe\x00garbage", "otlp_invalid_proto"),
])
def test_undecodable_messages(raw: bytes, reason: str) -> None:
    if reason == "otlp_invalid_proto":
        to_proto_bytes({"resourceSpans": []})  # skips when opentelemetry-proto is missing (outside CI)
    with pytest.raises(OtlpError) as info:
        decode_request(raw)
    assert info.value.reason == reason


def test_otlp_proto_maps_like_otlp_json() -> None:
    doc = load("genai_agent_run")
    from_json = map_request(decode_request(orjson.dumps(doc))).events
    from_proto = map_request(decode_request(to_proto_bytes(doc))).events
    assert from_proto == from_json


def test_translator_batches_per_agent_never_signs_and_dead_letters() -> None:
    settings = Settings(signing_keys={"k2": "second", "k1": "first"})
    tr = OtlpTranslator(settings)
    doc = {"resourceSpans": load("variants")["resourceSpans"] + load("invalid_spans")["resourceSpans"]}
    value = orjson.dumps(doc)
    out, dead = tr.translate(b"k", value, topic="otlp_spans", partition=3, offset=17)

    assert sorted(m.key for m in out) == [b"a-bad", b"orders-agent", b"support-bot"]
    support = next(m for m in out if m.key == b"support-bot")
    assert support.events == 3 and len(json.loads(support.value)) == 3
    for m in out:  # the worker never signs on behalf of a producer (#15): unsigned, unattested
        assert m.headers == {}

    assert [json.loads(d.value)["reason"] for d in dead] == ["otlp_invalid_span"] * 2
    record = json.loads(dead[1].value)
    assert record["source"] == {"topic": "otlp_spans", "partition": 3, "offset": 17, "index": 6}
    assert dead[1].headers == {"tripwire-reason": b"otlp_invalid_span"}
    assert (tr.stats.spans["mapped"], tr.stats.spans["invalid"], tr.stats.messages["ok"]) == (6, 2, 1)

    # same export again: identical events (stable ids -> downstream dedupe)
    again, _ = tr.translate(b"k", value, topic="otlp_spans", partition=3, offset=18)
    assert [m.value for m in again] == [m.value for m in out]

    out, dead = tr.translate(None, b"[]", topic="otlp_spans", partition=0, offset=1)
    assert out == [] and json.loads(dead[0].value)["reason"] == "otlp_not_request"
    assert tr.stats.messages["rejected"] == 1
    names = {f.name for f in tr.stats.families()}
    assert names == {"tripwire_otlp_spans", "tripwire_otlp_spans_skipped", "tripwire_otlp_messages"}


def test_unsigned_when_no_keys_and_times_shift() -> None:
    out, _ = OtlpTranslator(Settings()).translate(None, orjson.dumps(shifted_to_now(load("genai_agent_run"))),
                                                  topic="o", partition=0, offset=0)
    assert len(out) == 1 and out[0].headers == {}
    newest = max(e["ts"] for e in json.loads(out[0].value))
    assert abs(newest / 1000 - time.time()) < 60


def _span(op: str, attrs: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    def value(v: Any) -> dict[str, Any]:
        return {"stringValue": v} if isinstance(v, str) else {"intValue": str(v)}

    return copy.deepcopy({
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00f067aa0ba902b7",
        "name": name or f"{op} x", "startTimeUnixNano": "1793491200000000000",
        "endTimeUnixNano": "1793491200100000000",
        "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": op}}]
        + [{"key": k, "value": value(v)} for k, v in attrs.items()],
    })


def test_fixture_files_are_otlp_json() -> None:
    """Every fixture parses as an ExportTraceServiceRequest with the official protobuf JSON parser."""
    for name in ("genai_agent_run", "variants", "invalid_spans"):
        assert to_proto_bytes(load(name))


def test_docs_guardrail_table_matches_the_mapper() -> None:
    """docs/connect.md's guardrail table lists exactly the words the mapper knows, per action."""
    import re

    from streams.contract.otlp import DECISIONS, SKIP_REASONS
    from helpers.support import REPO

    doc = (REPO / "docs" / "connect.md").read_text()
    documented: dict[str, str | None] = {}
    for words, action in re.findall(r"^\| ([a-z, ]+) \| (`blocked`|`modified`|`warned`|no event) \|$", doc, re.M):
        for word in words.split(", "):
            documented[word] = None if action == "no event" else action.strip("`")
    assert documented == DECISIONS
    for reason in re.findall(r"skipped \(`(\w+)`", doc):
        assert reason in SKIP_REASONS
