"""Real frameworks → real broker → real `tripwire worker`: OpenInference instrumentors over otlp_spans, and
tripwire's own hooks over agent-traces; a tool that keeps raising guardrail flags trips its breaker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers.frameworks import SECRET, KafkaOtlpJsonExporter, agents_sdk_agent, langgraph_app, run_agent

from streams.emitter import Emitter
from streams.ops.procutil import stop_process
from helpers.support import Topics, WorkerProc, consume_all, start_worker, wait_for

pytestmark = pytest.mark.broker

#: a near-miss budget small enough for a test: 3+ flags on 3+ calls of a scope, most calls flagged
POLICY = {
    "fail_mode": "open",
    "budgets": [{
        "name": "guardrail-flags", "signal": "near_miss_rate", "scopes": ["agent:*", "agent:*/tool:*"],
        "objective": 0.05, "windows": [{"long": "5m", "short": "1m", "burn_rate": 2, "severity": "page"}],
        "min_evidence": {"min_calls": 2, "min_bad": 2}, "action": "open", "cooldown": "5m",
    }],
}


@pytest.fixture(scope="module")
def fw_worker(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:  # type: ignore[no-untyped-def]
    topics = Topics(f"fw-{uuid.uuid4().hex[:6]}")
    tmp: Path = tmp_path_factory.mktemp("fw-worker")
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    w = start_worker(broker, tmp, topics, app_id=f"tw-{topics.prefix}", extra_args=["--policy", str(policy)],
                     extra_env={"TRIPWIRE_METRICS_CACHE_S": "0"})
    yield w
    stop_process(w.proc)  # type: ignore[arg-type]


def breaker_state(w: WorkerProc, scope: str) -> str | None:
    r = httpx.get(f"{w.web}/v1/breakers/{scope}", timeout=5)
    return r.json().get("state") if r.status_code == 200 else None


def events_of(broker: Any, w: WorkerProc, agent: str, expect: int) -> list[dict[str, Any]]:
    """The events of ``agent`` on agent-traces (every message, batched or not), once ``expect`` are there."""
    def read() -> list[dict[str, Any]] | None:
        out: list[dict[str, Any]] = []
        for r in consume_all(broker.bootstrap, w.topics.traces, expect=10**6, timeout=2):
            if r.key != agent.encode():
                continue
            doc = json.loads(r.value)
            out.extend(doc if isinstance(doc, list) else [doc])
        return out if len(out) >= expect else None

    return wait_for(read, 40, f"{expect} events of {agent} on agent-traces", interval=0.5)


def otel_provider(broker: Any, w: WorkerProc, service: str) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(KafkaOtlpJsonExporter(broker.bootstrap, w.topics.otlp)))
    return provider


def test_langgraph_with_openinference_over_otlp_spans(broker, fw_worker) -> None:  # type: ignore[no-untyped-def]
    from openinference.instrumentation.langchain import LangChainInstrumentor

    w, agent = fw_worker, f"lg-oi-{uuid.uuid4().hex[:6]}"
    provider = otel_provider(broker, w, agent)
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        langgraph_app(rounds=3, guardrail_tracer=provider.get_tracer("guardrails")).invoke(
            {"messages": [("user", SECRET)]})
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    events = events_of(broker, w, agent, expect=3 + 6 + 4)
    kinds = sorted((e["kind"], e.get("monitor") or e.get("tool")) for e in events)
    assert kinds.count(("tool_call", "lookup_order")) == 3 and kinds.count(("tool_call", "send_email")) == 3
    assert kinds.count(("monitor_flag", "pii-filter")) == 3
    assert sum(1 for k, _ in kinds if k == "llm_call") == 4
    assert {e["attributes"]["otel.convention"] for e in events} == {"openinference"}
    assert SECRET.split()[0] not in json.dumps(events)
    # the tool whose guardrail keeps blocking trips its breaker end to end; the other tool does not
    try:
        wait_for(lambda: breaker_state(w, f"agent:{agent}/tool:send_email") == "open", 90, "send_email breaker open")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; /v1/breakers/…send_email: "
                             f"{httpx.get(f'{w.web}/v1/breakers/agent:{agent}/tool:send_email', timeout=5).text[:2000]}"
                             f"\nworker log:\n{w.log_tail(40)}") from None
    assert breaker_state(w, f"agent:{agent}/tool:lookup_order") in (None, "closed")
    r = httpx.get(f"{w.web}/v1/authz", headers={"X-Agent-Id": agent, "X-Tool": "send_email"}, timeout=5)
    assert r.status_code == 403


def test_agents_sdk_with_openinference_over_otlp_spans(broker, fw_worker) -> None:  # type: ignore[no-untyped-def]
    from agents import set_trace_processors
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    w, name, service = fw_worker, f"sdk-oi-{uuid.uuid4().hex[:6]}", f"sdk-svc-{uuid.uuid4().hex[:6]}"
    provider = otel_provider(broker, w, service)
    set_trace_processors([])  # no exporter to OpenAI
    instrumentor = OpenAIAgentsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        assert asyncio.run(run_agent(agents_sdk_agent(name), 2)) == 2
    finally:
        instrumentor.uninstrument()
        set_trace_processors([])
        provider.shutdown()

    # agent.name is set on the AGENT span only: the tool and LLM spans carry the resource's service.name
    events = events_of(broker, w, service, expect=2 + 4)
    kinds = sorted((e["kind"], e.get("tool") or e.get("model")) for e in events)
    assert kinds == sorted([("tool_call", "get_weather")] * 2 + [("llm_call", "scripted-1")] * 4)
    llm = next(e for e in events if e["kind"] == "llm_call")
    assert (llm["input_tokens"], llm["output_tokens"]) == (30, 5)
    assert SECRET.split()[0] not in json.dumps(events)
    # the instrumentor does not record GuardrailSpanData.triggered (status OK): its GUARDRAIL spans pass
    # (docs/connect.md); TripwireTracingProcessor below sees the trips
    assert w.metric("tripwire_otlp_spans_skipped_total", reason="guardrail_allowed") >= 2


def test_tripwire_hooks_over_agent_traces(broker, fw_worker) -> None:  # type: ignore[no-untyped-def]
    from agents import set_trace_processors

    from streams.emitter.langchain import TripwireCallbackHandler
    from streams.emitter.openai_agents import TripwireTracingProcessor

    w = fw_worker
    lg_agent, sdk_agent = f"lg-tw-{uuid.uuid4().hex[:6]}", f"sdk-tw-{uuid.uuid4().hex[:6]}"
    tw = Emitter(broker.bootstrap, topic=w.topics.traces)
    before = w.metric("tripwire_events_total", kind="monitor_flag")
    langgraph_app(rounds=3).invoke({"messages": [("user", SECRET)]},
                                   config={"callbacks": [TripwireCallbackHandler(tw, agent_id=lg_agent)]})
    set_trace_processors([TripwireTracingProcessor(tw)])
    try:
        assert asyncio.run(run_agent(agents_sdk_agent(sdk_agent), 3)) == 3
    finally:
        set_trace_processors([])
    assert tw.flush(15), tw.stats()
    tw.close()

    wait_for(lambda: w.metric("tripwire_events_total", kind="monitor_flag") >= before + 6, 30,
             "3 LangGraph + 3 Agents SDK guardrail flags counted")
    lg = events_of(broker, w, lg_agent, expect=4 + 6 + 3)
    assert sorted({e.get("tool") for e in lg if e["kind"] == "tool_call"}) == ["lookup_order", "send_email"]
    sdk = events_of(broker, w, sdk_agent, expect=6 + 3 + 3)
    assert {e["kind"] for e in sdk} == {"llm_call", "tool_call", "monitor_flag"}
    wait_for(lambda: breaker_state(w, f"agent:{lg_agent}/tool:send_email") == "open", 30,
             "LangGraph send_email breaker open")
    wait_for(lambda: breaker_state(w, f"agent:{sdk_agent}") == "open", 30,
             "Agents SDK agent breaker open (its output guardrail trips every run)")
