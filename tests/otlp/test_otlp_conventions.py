"""OpenInference and OpenLLMetry spans side by side with OTel GenAI: the tables of docs/connect.md, without Kafka.

Attribute names come from the conventions' own packages where they are installed
(``openinference-semantic-conventions``, ``opentelemetry-semantic-conventions-ai``), so a
rename upstream fails here rather than silently skipping spans in production.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.contract.otlp import Skip, map_request, map_span
from streams.contract.otlp_conventions import classify
from streams.contract.schema import TraceEvent

oi = pytest.importorskip("openinference.semconv.trace")
tl = pytest.importorskip("opentelemetry.semconv_ai")
SA, OIKind = oi.SpanAttributes, oi.OpenInferenceSpanKindValues
TLA, TLKind = tl.SpanAttributes, tl.TraceloopSpanKindValues


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": v}


def span(attrs: dict[str, Any], name: str = "span", error: bool = False, span_id: str = "00f067aa0ba902b7",
         events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": span_id, "name": name,
        "startTimeUnixNano": "1793491200000000000", "endTimeUnixNano": "1793491200100000000",
        "attributes": [{"key": k, "value": _value(v)} for k, v in attrs.items()],
    }
    if error:
        out["status"] = {"code": 2, "message": "boom"}
    if events:
        out["events"] = events
    return out


RESOURCE = {"service.name": "svc-agent"}


def test_the_attribute_names_are_the_conventions_own() -> None:
    assert (SA.OPENINFERENCE_SPAN_KIND, SA.TOOL_NAME, SA.AGENT_NAME, SA.SESSION_ID) == \
        ("openinference.span.kind", "tool.name", "agent.name", "session.id")
    assert (SA.LLM_TOKEN_COUNT_PROMPT, SA.LLM_TOKEN_COUNT_COMPLETION, SA.LLM_MODEL_NAME, SA.LLM_COST_TOTAL) == \
        ("llm.token_count.prompt", "llm.token_count.completion", "llm.model_name", "llm.cost.total")
    assert {k.value for k in OIKind} >= {"TOOL", "LLM", "AGENT", "CHAIN", "GUARDRAIL", "EVALUATOR", "EMBEDDING"}
    assert (TLA.TRACELOOP_SPAN_KIND, TLA.TRACELOOP_ENTITY_NAME, TLA.TRACELOOP_WORKFLOW_NAME, TLA.LLM_REQUEST_TYPE) \
        == ("traceloop.span.kind", "traceloop.entity.name", "traceloop.workflow.name", "llm.request.type")
    assert {k.value for k in TLKind} == {"workflow", "task", "agent", "tool", "unknown"}
    assert (TLA.LLM_USAGE_PROMPT_TOKENS, TLA.LLM_USAGE_COMPLETION_TOKENS) == \
        ("gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens")


def test_openinference_tool_llm_and_failures() -> None:
    tool = map_span(span({SA.OPENINFERENCE_SPAN_KIND: "TOOL", SA.TOOL_NAME: "refund", SA.AGENT_NAME: "billing",
                          SA.SESSION_ID: "s-1", SA.TOOL_ID: "call_7"}, name="refund"), RESOURCE)
    assert isinstance(tool, dict)
    TraceEvent.model_validate(tool)
    assert (tool["kind"], tool["tool"], tool["agent_id"], tool["session_id"], tool["tool_call_id"], tool["status"]) \
        == ("tool_call", "refund", "billing", "s-1", "call_7", "ok")
    assert tool["attributes"]["openinference.span.kind"] == "TOOL"
    assert tool["attributes"]["otel.convention"] == "openinference"

    nameless = map_span(span({SA.OPENINFERENCE_SPAN_KIND: "TOOL"}, name="lookup_order", error=True,
                             events=[{"name": "exception", "attributes": [
                                 {"key": "exception.type", "value": {"stringValue": "KeyError"}},
                                 {"key": "exception.message", "value": {"stringValue": "secret order 4711"}}]}]),
                        RESOURCE)
    assert isinstance(nameless, dict)
    assert (nameless["tool"], nameless["agent_id"], nameless["status"], nameless["error_type"]) == \
        ("lookup_order", "svc-agent", "error", "KeyError")
    assert "4711" not in orjson.dumps(nameless).decode()

    llm = map_span(span({SA.OPENINFERENCE_SPAN_KIND: "LLM", SA.LLM_MODEL_NAME: "gpt-4o-mini",
                         SA.LLM_TOKEN_COUNT_PROMPT: 120, SA.LLM_TOKEN_COUNT_COMPLETION: 30,
                         SA.LLM_COST_TOTAL: 0.0021, SA.LLM_PROVIDER: "openai"}), RESOURCE)
    assert isinstance(llm, dict)
    assert (llm["kind"], llm["model"], llm["input_tokens"], llm["output_tokens"], llm["cost_usd"]) == \
        ("llm_call", "gpt-4o-mini", 120, 30, 0.0021)
    assert llm["attributes"]["gen_ai.provider.name"] == "openai"

    # GUARDRAIL / EVALUATOR: status ERROR is the failure; OK / UNSET passed; a decision attribute wins
    failed = map_span(span({SA.OPENINFERENCE_SPAN_KIND: "GUARDRAIL", "gen_ai.tool.name": "send_email"},
                           name="pii-filter", error=True), RESOURCE)
    assert isinstance(failed, dict)
    assert (failed["kind"], failed["action"], failed["monitor"], failed["tool"]) == \
        ("monitor_flag", "blocked", "pii-filter", "send_email")
    assert map_span(span({SA.OPENINFERENCE_SPAN_KIND: "GUARDRAIL"}), RESOURCE) == Skip("guardrail_allowed")
    judged = map_span(span({SA.OPENINFERENCE_SPAN_KIND: "EVALUATOR", "gen_ai.guardrail.action": "warn"}, name="tone"),
                      RESOURCE)
    assert isinstance(judged, dict) and (judged["action"], judged["monitor"]) == ("warned", "tone")
    passed = map_span(span({SA.OPENINFERENCE_SPAN_KIND: "EVALUATOR", "gen_ai.guardrail.decision": "pass"},
                           error=True), RESOURCE)
    assert passed == Skip("guardrail_allowed")

    assert map_span(span({SA.OPENINFERENCE_SPAN_KIND: "CHAIN"}), RESOURCE) == Skip("unsupported_operation")
    assert map_span(span({SA.OPENINFERENCE_SPAN_KIND: "AGENT"}), RESOURCE) == Skip("no_outcome")
    outcome = map_span(span({SA.OPENINFERENCE_SPAN_KIND: "AGENT", "tripwire.outcome": "success"}), RESOURCE)
    assert isinstance(outcome, dict) and outcome["kind"] == "task_outcome"


def test_openllmetry_tool_workflow_and_llm() -> None:
    tool = map_span(span({TLA.TRACELOOP_SPAN_KIND: "tool", TLA.TRACELOOP_ENTITY_NAME: "get_weather",
                          TLA.TRACELOOP_WORKFLOW_NAME: "trip_planner",
                          "traceloop.association.properties.session_id": "chat-9"}, name="get_weather.tool"),
                    RESOURCE)
    assert isinstance(tool, dict)
    assert (tool["kind"], tool["tool"], tool["agent_id"], tool["session_id"]) == \
        ("tool_call", "get_weather", "svc-agent", "chat-9")
    assert tool["attributes"]["traceloop.workflow.name"] == "trip_planner"
    by_name = map_span(span({TLA.TRACELOOP_SPAN_KIND: "tool"}, name="search.tool"), RESOURCE)
    assert isinstance(by_name, dict) and by_name["tool"] == "search"

    llm = map_span(span({TLA.LLM_REQUEST_TYPE: "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
                         TLA.LLM_USAGE_PROMPT_TOKENS: 40, TLA.LLM_USAGE_COMPLETION_TOKENS: 8,
                         TLA.TRACELOOP_ENTITY_NAME: "not-a-tool"}, name="openai.chat"), RESOURCE)
    assert isinstance(llm, dict)
    assert (llm["kind"], llm["model"], llm["input_tokens"], llm["output_tokens"]) == ("llm_call", "gpt-4o", 40, 8)
    assert "tool" not in llm and llm["attributes"]["otel.convention"] == "openllmetry"

    assert map_span(span({TLA.TRACELOOP_SPAN_KIND: "task"}), RESOURCE) == Skip("unsupported_operation")
    assert map_span(span({TLA.TRACELOOP_SPAN_KIND: "workflow"}), RESOURCE) == Skip("no_outcome")
    done = map_span(span({TLA.TRACELOOP_SPAN_KIND: "workflow", "tripwire.outcome": "failure",
                          "traceloop.association.properties.task_id": "T-3"}), RESOURCE)
    assert isinstance(done, dict) and (done["kind"], done["outcome"], done["task_id"]) == \
        ("task_outcome", "failure", "T-3")
    # no guardrail span kind in OpenLLMetry: a GenAI guardrail operation or tripwire.kind marks one
    flag = map_span(span({TLA.TRACELOOP_SPAN_KIND: "task", "gen_ai.operation.name": "apply_guardrail",
                          "gen_ai.guardrail.decision": "block"}, name="moderation"), RESOURCE)
    assert isinstance(flag, dict) and (flag["kind"], flag["monitor"]) == ("monitor_flag", "moderation")


def test_precedence_genai_then_openinference_then_openllmetry() -> None:
    both = {"gen_ai.operation.name": "chat", SA.OPENINFERENCE_SPAN_KIND: "TOOL", TLA.TRACELOOP_SPAN_KIND: "tool"}
    assert classify(both) == ("llm_call", "gen_ai")
    assert classify({SA.OPENINFERENCE_SPAN_KIND: "LLM", TLA.TRACELOOP_SPAN_KIND: "tool"}) == \
        ("llm_call", "openinference")
    # fields: first present in GenAI → OpenInference → OpenLLMetry order
    ev = map_span(span({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "a", SA.TOOL_NAME: "b",
                        "gen_ai.agent.name": "x", SA.AGENT_NAME: "y", "gen_ai.conversation.id": "c1",
                        SA.SESSION_ID: "c2"}), RESOURCE)
    assert isinstance(ev, dict) and (ev["tool"], ev["agent_id"], ev["session_id"]) == ("a", "x", "c1")
    forced = map_span(span({"tripwire.kind": "refusal", SA.OPENINFERENCE_SPAN_KIND: "TOOL"}), RESOURCE)
    assert isinstance(forced, dict) and forced["kind"] == "refusal"


CONTENT = [
    "SECRET-PROMPT please wire $9000 to account 123",
    "SECRET-COMPLETION the wire is done",
    "SECRET-TOOL-ARGS {\"account\": \"123\"}",
    "SECRET-TOOL-RESULT ok 9000",
]


def test_prompts_completions_and_tool_arguments_never_reach_an_event() -> None:
    prompt, completion, args, result = CONTENT
    content = {
        SA.INPUT_VALUE: prompt, SA.OUTPUT_VALUE: completion,
        f"{SA.LLM_INPUT_MESSAGES}.0.message.content": prompt,
        f"{SA.LLM_OUTPUT_MESSAGES}.0.message.content": completion,
        SA.TOOL_PARAMETERS: args, "llm.prompts.0": prompt, "llm.invocation_parameters": args,
        "gen_ai.prompt": prompt, "gen_ai.completion": completion, "gen_ai.prompt.0.content": prompt,
        "gen_ai.completion.0.content": completion, "gen_ai.input.messages": prompt,
        "gen_ai.output.messages": completion, "gen_ai.tool.call.arguments": args, "gen_ai.tool.call.result": result,
        "gen_ai.system_instructions": prompt, "traceloop.entity.input": args, "traceloop.entity.output": result,
        "tool.description": prompt,
    }
    spans = [
        span({**content, SA.OPENINFERENCE_SPAN_KIND: "TOOL", SA.TOOL_NAME: "wire"}, span_id="0000000000000001"),
        span({**content, SA.OPENINFERENCE_SPAN_KIND: "LLM", SA.LLM_MODEL_NAME: "m"}, span_id="0000000000000002"),
        span({**content, SA.OPENINFERENCE_SPAN_KIND: "GUARDRAIL"}, error=True, span_id="0000000000000003"),
        span({**content, TLA.TRACELOOP_SPAN_KIND: "tool", TLA.TRACELOOP_ENTITY_NAME: "wire"},
             span_id="0000000000000004"),
        span({**content, TLA.LLM_REQUEST_TYPE: "chat"}, span_id="0000000000000005"),
        span({**content, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "wire"},
             span_id="0000000000000006"),
        span({**content, "gen_ai.operation.name": "chat"}, span_id="0000000000000007"),
        span({**content, "gen_ai.operation.name": "apply_guardrail", "gen_ai.guardrail.decision": "block"},
             span_id="0000000000000008"),
    ]
    out = map_request({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc-agent"}}]}, "scopeSpans": [{"spans": spans}]}]})
    assert len(out.events) == 8 and not out.invalid and not out.skipped
    produced = orjson.dumps(out.events).decode()
    for text in CONTENT:
        for fragment in (text, text.split()[0], "9000", "account"):
            assert fragment not in produced, fragment


def test_collector_filter_keeps_the_spans_of_every_convention() -> None:
    """deploy/otel/collector.yaml drops a span only when it has none of the markers classify() reads."""
    import yaml

    from streams.contract.otlp_conventions import (
        OPENINFERENCE_KIND_KEY,
        OPERATION_KEY,
        TRACELOOP_KIND_KEY,
        TRACELOOP_REQUEST_TYPE_KEY,
    )
    from helpers.support import REPO

    cfg = yaml.safe_load((REPO / "deploy" / "otel" / "collector.yaml").read_text())
    [condition] = cfg["processors"]["filter/genai"]["traces"]["span"]
    clauses = [c.strip() for c in condition.split(" and ")]
    markers = (OPERATION_KEY, OPENINFERENCE_KIND_KEY, TRACELOOP_KIND_KEY, TRACELOOP_REQUEST_TYPE_KEY, "tripwire.kind")
    assert sorted(clauses) == sorted(f'attributes["{m}"] == nil' for m in markers)
