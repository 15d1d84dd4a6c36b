"""tripwire's first-party hooks on the real frameworks, without a broker (events captured at Emitter.emit)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import orjson
import pytest
from helpers.frameworks import SECRET, agents_sdk_agent, langgraph_app, run_agent

from streams.emitter import Emitter


class Captured(Emitter):
    """An Emitter whose sender never connects: emitted (validated) events are kept in ``events``."""

    def __init__(self, agent_id: str | None = None) -> None:
        super().__init__("127.0.0.1:1", agent_id=agent_id, linger_s=3600)
        self.events: list[dict[str, Any]] = []

    def emit(self, kind: str, **fields: Any) -> str | None:
        event_id = super().emit(kind, **fields)
        with self._cond:
            self.events.extend(self._buf)
            self._buf.clear()
        return event_id


@pytest.fixture
def emitter() -> Any:
    tw = Captured(agent_id="fallback-agent")
    yield tw
    tw.close(timeout=0.1)


def test_importing_the_emitter_imports_no_framework() -> None:
    code = ("import streams.emitter, sys; bad = [m for m in ('langchain_core', 'agents', 'faust', 'river', 'scipy', "
            "'opentelemetry.sdk') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_langgraph_callback_handler(emitter: Captured) -> None:
    from streams.emitter.langchain import TripwireCallbackHandler

    handler = TripwireCallbackHandler(emitter, agent_id="support-graph")
    langgraph_app(rounds=2).invoke({"messages": [("user", SECRET)]},
                                   config={"callbacks": [handler], "configurable": {"thread_id": "t-42"}})
    kinds = [(e["kind"], e.get("monitor") or e.get("tool")) for e in emitter.events]
    assert sorted(kinds, key=str) == sorted([("llm_call", None)] * 3 + [("tool_call", "lookup_order")] * 2
                                            + [("tool_call", "send_email")] * 2
                                            + [("monitor_flag", "pii-filter")] * 2, key=str)
    assert {e["agent_id"] for e in emitter.events} == {"support-graph"}
    assert {e.get("session_id") for e in emitter.events} == {"t-42"}
    llm = next(e for e in emitter.events if e["kind"] == "llm_call")
    assert (llm["input_tokens"], llm["output_tokens"], llm["status"]) == (50, 7, "ok")
    tool = next(e for e in emitter.events if e.get("tool") == "lookup_order")
    assert tool["tool_call_id"].startswith("call_l") and tool["status"] == "ok" and tool["latency_ms"] >= 0
    flag = next(e for e in emitter.events if e["kind"] == "monitor_flag")
    assert (flag["action"], flag["severity"], flag["tool"]) == ("blocked", "high", "send_email")
    assert SECRET.split()[0] not in orjson.dumps(emitter.events).decode()


def test_openai_agents_tracing_processor(emitter: Captured) -> None:
    from agents import set_trace_processors

    from streams.emitter.openai_agents import TripwireTracingProcessor

    set_trace_processors([TripwireTracingProcessor(emitter)])  # replaces the SDK's exporter to OpenAI
    try:
        tripped = asyncio.run(run_agent(agents_sdk_agent("weather-bot"), 2))
    finally:
        set_trace_processors([])
    assert tripped == 2
    kinds = sorted((e["kind"], e.get("tool") or e.get("monitor") or e.get("model")) for e in emitter.events)
    assert kinds == sorted([("llm_call", "scripted-1")] * 4 + [("tool_call", "get_weather")] * 2
                           + [("monitor_flag", "no_secrets")] * 2)
    assert {e["agent_id"] for e in emitter.events} == {"weather-bot"}  # the SDK agent's name
    llm = next(e for e in emitter.events if e["kind"] == "llm_call")
    assert (llm["input_tokens"], llm["output_tokens"]) == (30, 5)
    assert all(":" in e["event_id"] and e["event_id"].startswith("trace_") for e in emitter.events)
    assert SECRET.split()[0] not in orjson.dumps(emitter.events).decode()


def test_otel_span_processor_on_genai_spans(emitter: Captured) -> None:
    """The generic SpanProcessor on OTel GenAI spans as pydantic-ai emits them (chat / execute_tool)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Status, StatusCode

    from streams.emitter.otel import TripwireSpanProcessor

    provider = TracerProvider()
    processor = TripwireSpanProcessor(emitter)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("pydantic-ai")
    with tracer.start_as_current_span("invoke_agent support", attributes={"gen_ai.operation.name": "invoke_agent",
                                                                         "gen_ai.agent.name": "support"}):
        with tracer.start_as_current_span("chat gpt-4o", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 9,
                "gen_ai.usage.output_tokens": 2, "gen_ai.agent.name": "support", "gen_ai.input.messages": SECRET}):
            pass
        with tracer.start_as_current_span("execute_tool refund", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "refund",
                "gen_ai.tool.call.arguments": SECRET}) as span:
            span.record_exception(ValueError(SECRET))
            span.set_status(Status(StatusCode.ERROR))
    provider.shutdown()
    events = {e["kind"]: e for e in emitter.events}
    assert set(events) == {"llm_call", "tool_call"} and processor.skipped == {"no_outcome": 1}
    assert (events["llm_call"]["agent_id"], events["llm_call"]["model"]) == ("support", "gpt-4o")
    tool = events["tool_call"]
    assert (tool["agent_id"], tool["status"], tool["error_type"]) == ("fallback-agent", "error", "ValueError")
    assert SECRET.split()[0] not in orjson.dumps(emitter.events).decode()
