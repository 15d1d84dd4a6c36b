"""A LangChain / LangGraph callback handler that emits trace events through an :class:`~streams.emitter.Emitter`.

Needs ``langchain-core`` (``pip install 'tripwire[langchain]'``)::

    from streams.emitter import Emitter
    from streams.emitter.langchain import TripwireCallbackHandler

    handler = TripwireCallbackHandler(Emitter("kafka-1:9092", agent_id="billing-agent"))
    graph.invoke(inputs, config={"callbacks": [handler], "configurable": {"thread_id": "t-1"}})

========================================  ============================================================
callback                                  trace event
========================================  ============================================================
``on_tool_start`` → ``on_tool_end``       ``tool_call`` (tool name, ``tool_call_id``, latency, ``ok``)
``on_tool_start`` → ``on_tool_error``     ``tool_call`` ``status=error``, ``error_type`` = exception class
``on_chat_model_start`` → ``on_llm_end``  ``llm_call`` (model, input / output tokens, latency)
``on_llm_error``                          ``llm_call`` ``status=error``
custom event ``tripwire.monitor_flag``    ``monitor_flag`` (``monitor``, ``action``, ``severity``, ``tool``)
========================================  ============================================================

A guardrail in your graph reports a catch with LangChain's own custom events:
``dispatch_custom_event("tripwire.monitor_flag", {"monitor": "pii-filter", "action": "blocked",
"tool": "send_email"})``. ``session_id`` is LangGraph's ``thread_id`` (or a ``session_id``
metadata key). Only names, ids, counts and statuses are sent: never prompts, completions,
tool inputs or outputs.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from streams.emitter.client import Emitter, InvalidEvent

#: custom event names that report a guardrail / monitor catch
FLAG_EVENTS = frozenset({"tripwire.monitor_flag", "tripwire.guardrail"})
_FLAG_FIELDS = ("monitor", "action", "severity", "tool", "tool_call_id")


def _session(metadata: dict[str, Any] | None) -> str | None:
    if not metadata:
        return None
    value = metadata.get("session_id") or metadata.get("thread_id")
    return str(value) if value is not None else None


class TripwireCallbackHandler(BaseCallbackHandler):
    """LangChain callbacks → ``tool_call`` / ``llm_call`` / ``monitor_flag`` events. Never raises into the agent."""

    raise_error = False

    def __init__(self, emitter: Emitter, agent_id: str | None = None) -> None:
        self.emitter = emitter
        self.agent_id = agent_id
        self._runs: dict[UUID, dict[str, Any]] = {}
        #: events the schema refused (e.g. a tool name over 128 characters)
        self.invalid = 0

    # -------------------------------------------------------------- tools
    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        tool = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        self._runs[run_id] = {"tool": str(tool), "tool_call_id": kwargs.get("tool_call_id"),
                              "session_id": _session(metadata), "started": time.perf_counter()}

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self._emit("tool_call", run, status="ok")

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self._emit("tool_call", run, status="error", error_type=type(error).__name__)

    # -------------------------------------------------------------- models
    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: UUID,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._llm_start(serialized, run_id, metadata, kwargs)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._llm_start(serialized, run_id, metadata, kwargs)

    def _llm_start(self, serialized: dict[str, Any] | None, run_id: UUID, metadata: dict[str, Any] | None,
                   kwargs: dict[str, Any]) -> None:
        params = kwargs.get("invocation_params") or {}
        model = (metadata or {}).get("ls_model_name") or params.get("model") or params.get("model_name")
        self._runs[run_id] = {"model": str(model) if model else None, "session_id": _session(metadata),
                              "started": time.perf_counter()}

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        tokens_in, tokens_out = _usage(response)
        llm_output = getattr(response, "llm_output", None) or {}
        if run.get("model") is None and isinstance(llm_output.get("model_name"), str):
            run["model"] = llm_output["model_name"]
        self._emit("llm_call", run, status="ok", input_tokens=tokens_in, output_tokens=tokens_out)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self._emit("llm_call", run, status="error", error_type=type(error).__name__)

    # -------------------------------------------------------------- guardrails
    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, metadata: dict[str, Any] | None = None,
                        **kwargs: Any) -> None:
        if name not in FLAG_EVENTS or not isinstance(data, dict):
            return
        fields = {k: data[k] for k in _FLAG_FIELDS if data.get(k) is not None}
        fields.setdefault("monitor", "guardrail")
        fields.setdefault("action", "blocked")
        self._send("monitor_flag", session_id=_session(metadata), **fields)

    # -------------------------------------------------------------- emitting
    def _emit(self, kind: str, run: dict[str, Any], **fields: Any) -> None:
        started = run.pop("started")
        self._send(kind, latency_ms=(time.perf_counter() - started) * 1000, **run, **fields)

    def _send(self, kind: str, **fields: Any) -> None:
        if self.agent_id is not None:
            fields.setdefault("agent_id", self.agent_id)
        try:
            self.emitter.emit(kind, **fields)
        except InvalidEvent:
            self.invalid += 1


def _usage(response: Any) -> tuple[int | None, int | None]:
    """(input, output) tokens of an ``LLMResult``: the message's ``usage_metadata``, else ``llm_output.token_usage``."""
    tokens_in = tokens_out = 0
    seen = False
    for generations in getattr(response, "generations", None) or ():
        for gen in generations:
            usage = getattr(getattr(gen, "message", None), "usage_metadata", None)
            if usage:
                seen = True
                tokens_in += int(usage.get("input_tokens") or 0)
                tokens_out += int(usage.get("output_tokens") or 0)
    if seen:
        return tokens_in, tokens_out
    usage = (getattr(response, "llm_output", None) or {}).get("token_usage") or {}
    if not usage:
        return None, None
    return usage.get("prompt_tokens", usage.get("input_tokens")), usage.get("completion_tokens",
                                                                            usage.get("output_tokens"))
