"""Cost of the OTLP span mapping per span, against the native trace-event decode path, in the same run.

Run: ``python bench/bench_otlp.py`` (< 30 s on a 2-core box). Both paths start from the bytes
of a Kafka message holding 100 items and end with schema-validated events:

* otlp: one OTLP/JSON ExportTraceServiceRequest of 100 spans (a mix of OTel GenAI,
  OpenInference and OpenLLMetry tool / LLM / guardrail spans, plus content attributes the
  mapper must ignore) → :func:`decode_request` + :func:`map_request` (decode, map, validate);
* native: one JSON array of the 100 trace events those spans map to →
  :func:`streams.contract.decode.decode_message` (decode, validate), the worker's own path.

Prints one machine-readable line ``BENCH otlp_spans_per_s=… native_events_per_s=… ratio=…``.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import orjson  # noqa: E402

from streams.contract.decode import decode_message  # noqa: E402
from streams.contract.otlp import decode_request, map_request  # noqa: E402

SPANS_PER_MESSAGE = 100
SECONDS = 4.0


def _attr(key: str, value: object) -> dict[str, object]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _span(i: int, now_ns: int) -> dict[str, object]:
    content = {"input.value": "x" * 200, "output.value": "y" * 200}
    shape = i % 6
    if shape == 0:
        attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": f"tool{i % 7}",
                 "gen_ai.agent.id": f"agent-{i % 13}", "gen_ai.tool.call.id": f"call_{i}"}
    elif shape == 1:
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 812,
                 "gen_ai.usage.output_tokens": 64, "gen_ai.agent.id": f"agent-{i % 13}"}
    elif shape == 2:
        attrs = {"openinference.span.kind": "TOOL", "tool.name": f"tool{i % 7}", "agent.name": f"agent-{i % 13}",
                 "session.id": "s-1", **content}
    elif shape == 3:
        attrs = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.token_count.prompt": 120,
                 "llm.token_count.completion": 30, "agent.name": f"agent-{i % 13}", **content}
    elif shape == 4:
        attrs = {"traceloop.span.kind": "tool", "traceloop.entity.name": f"tool{i % 7}",
                 "traceloop.workflow.name": "wf", "traceloop.entity.input": "z" * 200}
    else:
        attrs = {"gen_ai.operation.name": "apply_guardrail", "gen_ai.guardrail.decision": "block",
                 "gen_ai.guardrail.name": "pii", "gen_ai.agent.id": f"agent-{i % 13}"}
    return {"traceId": f"{i:032x}", "spanId": f"{i + 1:016x}", "name": f"span {i}",
            "startTimeUnixNano": str(now_ns - 5_000_000), "endTimeUnixNano": str(now_ns),
            "attributes": [_attr(k, v) for k, v in attrs.items()]}


def _rate(fn: object, items: int) -> float:
    n, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < SECONDS:
        for _ in range(20):
            fn()  # type: ignore[operator]
        n += 20
    return n * items / elapsed


def main() -> None:
    now = time.time_ns()
    doc = {"resourceSpans": [{"resource": {"attributes": [_attr("service.name", "svc")]},
                              "scopeSpans": [{"spans": [_span(i, now) for i in range(SPANS_PER_MESSAGE)]}]}]}
    otlp_value = orjson.dumps(doc)
    events = map_request(decode_request(otlp_value)).events
    assert len(events) == SPANS_PER_MESSAGE, len(events)
    native_value = orjson.dumps(events)
    good, bad = decode_message(None, native_value, max_bytes=1 << 24)
    assert len(good) == SPANS_PER_MESSAGE and not bad

    otlp = _rate(lambda: map_request(decode_request(otlp_value)), SPANS_PER_MESSAGE)
    native = _rate(lambda: decode_message(None, native_value, max_bytes=1 << 24), SPANS_PER_MESSAGE)
    print(f"otlp mapping (decode + map + validate): {otlp:,.0f} spans/s; "
          f"native decode + validate: {native:,.0f} events/s")
    print(f"BENCH otlp_spans_per_s={otlp:.0f} native_events_per_s={native:.0f} ratio={otlp / native:.2f}")


if __name__ == "__main__":
    main()
