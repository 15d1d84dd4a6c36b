"""An OpenAI Agents SDK ``TracingProcessor`` that emits trace events through an :class:`~streams.emitter.Emitter`.

Needs ``openai-agents`` (``pip install 'tripwire[openai-agents]'``)::

    from agents import add_trace_processor
    from streams.emitter import Emitter
    from streams.emitter.openai_agents import TripwireTracingProcessor

    add_trace_processor(TripwireTracingProcessor(Emitter("kafka-1:9092", agent_id="billing-agent")))

=====================================  =====================================================================
SDK span (``span_data``)                trace event
=====================================  =====================================================================
``FunctionSpanData``                    ``tool_call`` (tool = function name; ``status=error`` when the span has an error)
``GenerationSpanData``                  ``llm_call`` (model, ``usage.input_tokens`` / ``output_tokens``)
``ResponseSpanData``                    ``llm_call`` (``response.model``, ``response.usage``)
``GuardrailSpanData`` ``triggered``     ``monitor_flag`` (monitor = guardrail name, ``action=blocked``)
``AgentSpanData``, handoffs, custom     none (the agent's name becomes the agent id of the spans under it)
=====================================  =====================================================================

``agent_id``: this processor's ``agent_id`` if given, else the name of the SDK agent the
span runs under, else the emitter's. ``session_id``: the trace's ``group_id``.
``event_id``: ``<trace_id>:<span_id>``. Inputs, outputs and instructions are never sent.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from agents.tracing import Span, Trace, TracingProcessor
from agents.tracing.span_data import (
    AgentSpanData,
    FunctionSpanData,
    GenerationSpanData,
    GuardrailSpanData,
    ResponseSpanData,
)

from streams.emitter.client import Emitter, InvalidEvent


def _ms(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def _usage(usage: Any) -> tuple[Any, Any]:
    if usage is None:
        return None, None
    if isinstance(usage, dict):
        return usage.get("input_tokens"), usage.get("output_tokens")
    return getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)


class TripwireTracingProcessor(TracingProcessor):
    """Agents SDK spans → ``tool_call`` / ``llm_call`` / ``monitor_flag`` events. Never raises into the agent."""

    def __init__(self, emitter: Emitter, agent_id: str | None = None) -> None:
        self.emitter = emitter
        self.agent_id = agent_id
        self._lock = threading.Lock()
        self._agent_of: dict[str, str | None] = {}   # span id -> name of the SDK agent it runs under
        self._group_of: dict[str, str | None] = {}   # trace id -> group id (the session)
        #: events the schema refused
        self.invalid = 0

    def on_trace_start(self, trace: Trace) -> None:
        with self._lock:
            self._group_of[trace.trace_id] = getattr(trace, "group_id", None)

    def on_trace_end(self, trace: Trace) -> None:
        with self._lock:
            self._group_of.pop(trace.trace_id, None)

    def on_span_start(self, span: Span[Any]) -> None:
        data = span.span_data
        with self._lock:
            if isinstance(data, AgentSpanData):
                self._agent_of[span.span_id] = data.name
            else:
                self._agent_of[span.span_id] = self._agent_of.get(span.parent_id or "")

    def on_span_end(self, span: Span[Any]) -> None:
        with self._lock:
            agent = self._agent_of.pop(span.span_id, None)
            session = self._group_of.get(span.trace_id)
        data = span.span_data
        error = span.error is not None
        fields: dict[str, Any]
        if isinstance(data, FunctionSpanData):
            kind, fields = "tool_call", {"tool": data.name, "status": "error" if error else "ok"}
        elif isinstance(data, GenerationSpanData):
            tokens_in, tokens_out = _usage(data.usage)
            kind, fields = "llm_call", {"model": data.model, "input_tokens": tokens_in, "output_tokens": tokens_out,
                                        "status": "error" if error else "ok"}
        elif isinstance(data, ResponseSpanData):
            response = data.response
            tokens_in, tokens_out = _usage(getattr(response, "usage", None))
            model = getattr(response, "model", None)
            kind, fields = "llm_call", {"model": str(model) if model else None, "input_tokens": tokens_in,
                                        "output_tokens": tokens_out, "status": "error" if error else "ok"}
        elif isinstance(data, GuardrailSpanData) and data.triggered:
            kind, fields = "monitor_flag", {"monitor": data.name, "action": "blocked"}
        else:
            return
        started, ended = _ms(span.started_at), _ms(span.ended_at)
        if started is not None and ended is not None and ended >= started:
            fields["latency_ms"] = float(ended - started)
        try:
            self.emitter.emit(kind, event_id=f"{span.trace_id}:{span.span_id}", ts=ended or started,
                              agent_id=self.agent_id or agent or self.emitter.agent_id, session_id=session,
                              **fields)
        except InvalidEvent:
            self.invalid += 1

    def shutdown(self) -> None:
        self.emitter.flush()

    def force_flush(self) -> None:
        self.emitter.flush()
