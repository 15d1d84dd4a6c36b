"""The three span conventions tripwire reads, side by side: OTel GenAI, OpenInference, OpenLLMetry.

A span is *classified* by the first convention, in this precedence, whose marker
attribute it carries (one dict lookup each, no pattern matching):

1. ``tripwire.kind`` — set by your own code; names the event kind directly;
2. OTel GenAI — ``gen_ai.operation.name`` (``execute_tool``, ``chat``, ``apply_guardrail`` ...);
3. OpenInference (Arize Phoenix) — ``openinference.span.kind`` (``TOOL``, ``LLM``, ``GUARDRAIL`` ...);
4. OpenLLMetry (Traceloop) — ``traceloop.span.kind`` (``tool``, ``agent``, ``workflow``, ``task``),
   and, for its LLM spans, which carry no span kind, ``llm.request.type`` (``chat``, ``completion`` ...).

Event *fields* are then read from every convention at once, first present wins, in the
same precedence (the ``*_KEYS`` tuples below; the attribute names are those of the
``openinference-semantic-conventions`` and ``opentelemetry-semantic-conventions-ai``
packages). Only names, ids, counts and statuses are read: never ``input.value``,
``output.value``, ``llm.input_messages``, ``gen_ai.prompt``, ``traceloop.entity.input`` or
any other content attribute.

>>> classify({"openinference.span.kind": "TOOL", "gen_ai.operation.name": "chat"})
('llm_call', 'gen_ai')
>>> classify({"openinference.span.kind": "TOOL"}), classify({"traceloop.span.kind": "tool"})
(('tool_call', 'openinference'), ('tool_call', 'openllmetry'))
>>> classify({"http.method": "GET"})
Skip(reason='not_genai')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GENAI = "gen_ai"
OPENINFERENCE = "openinference"
OPENLLMETRY = "openllmetry"
TRIPWIRE = "tripwire"

OPERATION_KEY = "gen_ai.operation.name"
OPENINFERENCE_KIND_KEY = "openinference.span.kind"
TRACELOOP_KIND_KEY = "traceloop.span.kind"
TRACELOOP_REQUEST_TYPE_KEY = "llm.request.type"

#: roles: tool_call and llm_call are event kinds; ``guardrail`` becomes a monitor_flag on a
#: failure verdict; ``agent`` becomes a task_outcome when the span carries ``tripwire.outcome``
GENAI_OPERATIONS: dict[str, str] = {
    "execute_tool": "tool_call",
    "chat": "llm_call", "text_completion": "llm_call", "generate_content": "llm_call", "embeddings": "llm_call",
    "apply_guardrail": "guardrail", "run_guardrail": "guardrail",
    "invoke_agent": "agent", "invoke_workflow": "agent",
}
#: openinference.span.kind (OpenInferenceSpanKindValues) -> role; CHAIN, RETRIEVER, RERANKER, PROMPT,
#: DECISION, UNKNOWN carry no event
OPENINFERENCE_KINDS: dict[str, str] = {
    "TOOL": "tool_call", "LLM": "llm_call", "EMBEDDING": "llm_call",
    "GUARDRAIL": "guardrail", "EVALUATOR": "guardrail", "AGENT": "agent",
}
#: traceloop.span.kind (TraceloopSpanKindValues) -> role; ``task`` and ``unknown`` carry no event
TRACELOOP_KINDS: dict[str, str] = {"tool": "tool_call", "agent": "agent", "workflow": "agent"}
#: llm.request.type (LLMRequestTypeValues) of OpenLLMetry's LLM spans -> role
TRACELOOP_REQUEST_TYPES: dict[str, str] = {
    "chat": "llm_call", "completion": "llm_call", "embedding": "llm_call", "rerank": "llm_call",
}

# ------------------------------------------------------------------ guardrails
#: attributes that may carry a guardrail's result, first present wins. Guardrail results are not
#: standardized in the GenAI semantic conventions yet: these are the proposals' names
#: (``gen_ai.security.*``) and the common ad-hoc ones (``gen_ai.guardrail.*``).
GUARDRAIL_DECISION_KEYS = (
    "tripwire.action",
    "gen_ai.security.action.type",
    "gen_ai.security.decision.type",
    "gen_ai.security.verdict.type",
    "gen_ai.guardrail.action",
    "gen_ai.guardrail.decision",
)
GUARDRAIL_NAME_KEYS = (
    "tripwire.monitor",
    "gen_ai.guardian.name",
    "gen_ai.security.guardrail.name",
    "gen_ai.guardrail.name",
    "gen_ai.guardian.id",
    "gen_ai.security.guardrail.id",
    "gen_ai.guardrail.id",
)
#: guardrail result words -> monitor_flag action (None: the guardrail let it through, no event)
_DECISION_WORDS: dict[str | None, str] = {
    "blocked": "block blocked deny denied reject rejected refuse refused stop stopped",
    "modified": "modify modified redact redacted mask masked sanitize sanitized rewrite rewritten",
    "warned": "warn warned warning flag flagged audit audited",
    None: "allow allowed pass passed accept accepted approve approved ok none",
}
DECISIONS: dict[str, str | None] = {w: action for action, words in _DECISION_WORDS.items() for w in words.split()}


# ------------------------------------------------------------------ fields (first present wins)
AGENT_KEYS = ("tripwire.agent_id", "gen_ai.agent.id", "gen_ai.agent.name", "agent.name", "service.name")
SESSION_KEYS = ("gen_ai.conversation.id", "session.id", "traceloop.association.properties.session_id")
TASK_KEYS = ("traceloop.association.properties.task_id",)
TOOL_KEYS = ("gen_ai.tool.name", "tool.name")
TOOL_CALL_ID_KEYS = ("gen_ai.tool.call.id", "tool.id", "tool_call.id")
MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name", "embedding.model_name")
INPUT_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKEN_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
COST_KEYS = ("llm.cost.total",)
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
TENANT_KEYS = ("tenant.id",)
#: span names, kinds and workflow names copied into the event's ``attributes`` (names only)
NAME_ATTRIBUTES = (OPENINFERENCE_KIND_KEY, TRACELOOP_KIND_KEY, "traceloop.workflow.name")


@dataclass(frozen=True, slots=True)
class Skip:
    """A span that carries no trace event, with a bounded reason (a metric label)."""

    reason: str


def _role(table: Mapping[str, str], value: Any, convention: str) -> tuple[str, str] | Skip:
    role = table.get(value) if isinstance(value, str) else None
    return (role, convention) if role is not None else Skip("unsupported_operation")


def classify(attrs: Mapping[str, Any]) -> tuple[str, str] | Skip:
    """(role, convention) of a span's merged attributes, or :class:`Skip` (``not_genai``, ``unsupported_operation``).

    ``tripwire.kind`` is handled by the caller (it names the kind itself).
    """
    op = attrs.get(OPERATION_KEY)
    if op is not None:
        return _role(GENAI_OPERATIONS, op.strip().lower() if isinstance(op, str) else op, GENAI)
    kind = attrs.get(OPENINFERENCE_KIND_KEY)
    if kind is not None:
        return _role(OPENINFERENCE_KINDS, kind.upper() if isinstance(kind, str) else kind, OPENINFERENCE)
    kind = attrs.get(TRACELOOP_KIND_KEY)
    if kind is not None:
        return _role(TRACELOOP_KINDS, kind.lower() if isinstance(kind, str) else kind, OPENLLMETRY)
    kind = attrs.get(TRACELOOP_REQUEST_TYPE_KEY)
    if kind is not None:
        return _role(TRACELOOP_REQUEST_TYPES, kind.lower() if isinstance(kind, str) else kind, OPENLLMETRY)
    return Skip("not_genai")


def tool_from_span_name(name: str, convention: str) -> str:
    """The tool name a convention puts in the span name, when no attribute carries it.

    >>> tool_from_span_name("execute_tool refund", "gen_ai"), tool_from_span_name("refund.tool", "openllmetry")
    ('refund', 'refund')
    >>> tool_from_span_name("refund", "openinference"), tool_from_span_name("run it", "gen_ai")
    ('refund', '')
    """
    if convention == OPENINFERENCE:
        return name.strip()
    if convention == OPENLLMETRY:
        return name.removesuffix(".tool").strip()
    return name.removeprefix("execute_tool").strip() if name.startswith("execute_tool ") else ""


def first(attrs: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        v = attrs.get(k)
        if v is not None and v != "":
            return v
    return None


def guardrail_verdict(merged: Mapping[str, Any], convention: str, error: bool, name: str) -> dict[str, Any] | Skip:
    """monitor_flag fields (action, monitor, severity) of a guardrail / evaluator span that failed, else Skip.

    A decision attribute (:data:`GUARDRAIL_DECISION_KEYS`) decides in every convention. Without one,
    an OpenInference GUARDRAIL / EVALUATOR span failed when its status is ERROR (``blocked``) and
    passed otherwise; a GenAI guardrail without a decision is ``guardrail_no_decision``.
    """
    decision = first(merged, *GUARDRAIL_DECISION_KEYS)
    if decision is None:
        if convention != OPENINFERENCE:
            return Skip("guardrail_no_decision")
        if not error:
            return Skip("guardrail_allowed")
        action: str | None = "blocked"
    else:
        action = DECISIONS.get(str(decision).strip().lower(), "?")
        if action is None:
            return Skip("guardrail_allowed")
        if action == "?":
            return Skip("guardrail_no_decision")
    out: dict[str, Any] = {"action": action,
                           "monitor": first(merged, *GUARDRAIL_NAME_KEYS) or name or "guardrail"}
    severity = first(merged, "gen_ai.guardrail.severity", "gen_ai.security.risk.severity")
    if isinstance(severity, str) and severity.lower() in ("low", "medium", "high", "critical"):
        out["severity"] = severity.lower()
    return out
