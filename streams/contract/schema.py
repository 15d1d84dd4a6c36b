"""Trace event schema version 1 (DESIGN.md), as pydantic v2 models.

One Kafka message on ``agent-traces`` holds one event object or a JSON array of
events of the same agent. ``ts`` is normalised to epoch seconds (float); unknown
extra fields move into ``attributes`` (non-scalars are kept as compact JSON text).

>>> ev = TraceEvent.model_validate({"schema_version": "1", "event_id": "e1",
...     "ts": 1793491200000, "agent_id": "a", "kind": "tool_call", "tool": "search",
...     "region": "eu"})
>>> ev.ts, ev.attributes
(1793491200.0, {'region': 'eu'})
"""

from __future__ import annotations

import functools
import math
import time
from datetime import datetime
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from breakers.scope import MAX_ID_LEN, ScopeError, canonical_tool, validate_id

SCHEMA_VERSION = "1"
KINDS: tuple[str, ...] = (
    "tool_call",
    "llm_call",
    "monitor_flag",
    "incident",
    "refusal",
    "escalation",
    "task_outcome",
)
TOOL_KINDS: frozenset[str] = frozenset({"tool_call"})
MAX_TEXT_LEN = 256
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_VALUE_LEN = 1024
#: how far in the future an event's ``ts`` may lie (clock skew allowance)
MAX_FUTURE_S = 86_400.0

Kind = Literal["tool_call", "llm_call", "monitor_flag", "incident", "refusal", "escalation", "task_outcome"]
Scalar = Union[str, int, float, bool, None]


class FutureTimestamp(ValueError):
    """``ts`` lies more than a day ahead of the worker's clock."""


def _parse_ts(value: Any) -> float:
    """RFC 3339 string or epoch milliseconds (int) -> epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("ts in epoch milliseconds must be >= 0")
        try:
            seconds = value / 1000.0
        except OverflowError:  # beyond any float: a reject like any other far-future ts, never an OverflowError
            raise ValueError("future_timestamp: ts is more than a day in the future") from None
    elif isinstance(value, str):
        if len(value) > 64:
            raise ValueError("ts string is too long for an RFC 3339 timestamp")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("ts is not an RFC 3339 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueError("ts must carry a UTC offset (RFC 3339), e.g. 2026-11-01T00:00:00Z")
        seconds = parsed.timestamp()
    else:
        raise ValueError("ts must be an RFC 3339 string or epoch milliseconds")
    if seconds > time.time() + MAX_FUTURE_S:
        raise ValueError("future_timestamp: ts is more than a day in the future")
    return seconds


EpochSeconds = Annotated[
    float,
    BeforeValidator(_parse_ts),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "string", "format": "date-time", "description": "RFC 3339 with offset"},
                {"type": "integer", "minimum": 0, "description": "epoch milliseconds"},
            ]
        }
    ),
]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]
#: the pydantic error type (and dead-letter reason) of an id that scope parsing would refuse
INVALID_ID = "invalid_id"


@functools.lru_cache(maxsize=65536)
def _id_problem(kind: str, value: str) -> str | None:
    try:
        validate_id(kind, value)
        if kind == "tool":  # its canonical spelling (percent-decoded, folded or not) must be valid too
            canonical_tool(value, case_fold=False), canonical_tool(value, case_fold=True)
    except ScopeError as exc:
        return str(exc)
    return None


def _scope_id(kind: str) -> AfterValidator:
    """Validate an id with the rules of scope parsing (:func:`breakers.scope.validate_id`).

    Agent ids, tool names and tenants become breaker scopes; an id the scope grammar refuses
    (control characters, the reserved ``/tool:`` separator, ``/`` in a tenant) is refused here,
    at the boundary, as ``invalid_id``, instead of failing later in evaluation.
    """

    def check(value: str) -> str:
        problem = _id_problem(kind, value)
        if problem is not None:
            raise PydanticCustomError(INVALID_ID, "{problem}", {"problem": problem})
        return value

    return AfterValidator(check)


AgentId = Annotated[Id, _scope_id("agent")]
ToolName = Annotated[Id, _scope_id("tool")]
TenantId = Annotated[Id, _scope_id("tenant")]
Text = Annotated[str, Field(max_length=MAX_TEXT_LEN)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
AttributeValue = Union[Annotated[str, Field(max_length=MAX_ATTRIBUTE_VALUE_LEN)], int, float, bool, None]


class TraceEvent(BaseModel):
    """One agent trace event, schema version 1."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        str_max_length=MAX_ATTRIBUTE_VALUE_LEN,
        title="tripwire trace event v1",
    )

    schema_version: Literal["1"]
    event_id: Id
    ts: EpochSeconds
    agent_id: AgentId
    kind: Kind
    tenant: TenantId | None = None
    session_id: Text | None = None
    task_id: Text | None = None
    attempt: Annotated[int, Field(ge=1)] | None = None
    #: ``retry`` (attempts stop at the first success) | ``trial`` (repeated independent trials):
    #: how Reliability@K reads ``attempt``; absent = detected from the data (docs/contract.md)
    attempt_kind: Literal["retry", "trial"] | None = None
    tool: ToolName | None = None
    tool_call_id: Text | None = None
    model: Text | None = None
    status: Literal["ok", "error"] | None = None
    error_type: Text | None = None
    latency_ms: NonNegative | None = None
    cost_usd: NonNegative | None = None
    input_tokens: NonNegative | None = None
    output_tokens: NonNegative | None = None
    human_minutes: NonNegative | None = None
    severity: Literal["low", "medium", "high", "critical"] | None = None
    monitor: Text | None = None
    action: Literal["blocked", "modified", "warned"] | None = None
    outcome: Literal["success", "failure"] | None = None
    intervened: bool | None = None
    should_refuse: bool | None = None
    drill_id: Id | None = None
    attributes: Annotated[dict[Annotated[str, Field(max_length=MAX_ID_LEN)], AttributeValue], Field(max_length=MAX_ATTRIBUTES)] = Field(
        default_factory=dict
    )

    @model_validator(mode="before")
    @classmethod
    def _extras_into_attributes(cls, data: Any) -> Any:
        """Keep unknown fields: move them into ``attributes`` (never an error).

        A flag or incident naming an over-long ``tool`` (a model's unparsed reasoning, as
        in the ToolEmu data) keeps counting for its agent: the text moves to
        ``attributes.tool_overlong`` and ``tool`` is cleared. A ``tool_call`` with such a
        tool is rejected (its tool would not be a valid scope).
        """
        if not isinstance(data, dict):
            return data
        tool = data.get("tool")
        kind = data.get("kind")  # any JSON value: an unhashable one (a list) is no tool kind, never a TypeError
        if (isinstance(tool, str) and len(tool) > MAX_ID_LEN and not (isinstance(kind, str) and kind in TOOL_KINDS)
                and isinstance(data.get("attributes") or {}, dict)):
            data = dict(data)
            data["attributes"] = {**(data.get("attributes") or {}), "tool_overlong": tool[:MAX_ATTRIBUTE_VALUE_LEN]}
            data["tool"] = None
        if _FIELDS.issuperset(data):  # the common case: no unknown fields (no set built)
            return data
        extra = data.keys() - _FIELDS
        attrs = data.get("attributes")
        if attrs is not None and not isinstance(attrs, dict):
            return data  # let validation reject the malformed 'attributes' instead of dropping it
        data = dict(data)
        attrs = dict(attrs) if attrs is not None else {}
        for name in extra:
            value = data.pop(name)
            if isinstance(value, (dict, list)):
                try:
                    value = orjson.dumps(value).decode()[:MAX_ATTRIBUTE_VALUE_LEN]
                except orjson.JSONEncodeError:  # a TypeError: pydantic would not turn it into a reject
                    raise ValueError(f"extra field {str(name)[:64]!r} is nested too deeply or not JSON") from None
            elif isinstance(value, str):
                value = value[:MAX_ATTRIBUTE_VALUE_LEN]
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            attrs.setdefault(str(name)[:MAX_ID_LEN], value)
        data["attributes"] = attrs
        return data

    @model_validator(mode="after")
    def _kind_rules(self) -> "TraceEvent":
        if self.kind in TOOL_KINDS and self.tool is None:
            raise ValueError(f"a {self.kind} event needs a 'tool'")
        if self.kind == "task_outcome" and self.outcome is None:
            raise ValueError("a task_outcome event needs an 'outcome'")
        return self


_FIELDS = frozenset(TraceEvent.model_fields)


def json_schema() -> dict[str, Any]:
    """The JSON Schema for producers in other languages (``schemas/trace-event-v1.json``)."""
    schema = TraceEvent.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://tripwire.dev/schemas/trace-event-v1.json"
    schema["additionalProperties"] = True
    schema["description"] = (
        "One agent trace event (schema version 1). A Kafka message on agent-traces holds one "
        "event object or a JSON array of events that all carry the message key's agent_id. "
        "Unknown extra fields are accepted and kept in attributes. tool is required when kind "
        "is tool_call; outcome when kind is task_outcome."
    )
    schema["allOf"] = [
        {"if": {"properties": {"kind": {"const": "tool_call"}}}, "then": {"required": ["tool"]}},
        {"if": {"properties": {"kind": {"const": "task_outcome"}}}, "then": {"required": ["outcome"]}},
    ]
    return schema


# ---------------------------------------------------------------------------- fast path (issue #19)
#: field → how :func:`fast_event` checks it (anything else, e.g. ``attributes`` or an extra field: pydantic)
_ID, _SCOPE_ID, _TEXT, _AMOUNT, _ATTEMPT, _FLAG, _CHOICE = range(7)
_FAST: dict[str, tuple[int, Any]] = {
    "event_id": (_ID, None), "drill_id": (_ID, None),
    "agent_id": (_SCOPE_ID, "agent"), "tool": (_SCOPE_ID, "tool"), "tenant": (_SCOPE_ID, "tenant"),
    **{name: (_TEXT, None) for name in ("session_id", "task_id", "tool_call_id", "model", "error_type", "monitor")},
    **{name: (_AMOUNT, None) for name in ("latency_ms", "cost_usd", "input_tokens", "output_tokens", "human_minutes")},
    "attempt": (_ATTEMPT, None),
    "intervened": (_FLAG, None), "should_refuse": (_FLAG, None),
    "kind": (_CHOICE, frozenset(KINDS)), "attempt_kind": (_CHOICE, frozenset(("retry", "trial"))),
    "status": (_CHOICE, frozenset(("ok", "error"))),
    "severity": (_CHOICE, frozenset(("low", "medium", "high", "critical"))),
    "action": (_CHOICE, frozenset(("blocked", "modified", "warned"))),
    "outcome": (_CHOICE, frozenset(("success", "failure"))),
}
#: every field at its default, in declaration order (a validated event's ``__dict__`` order)
_DEFAULTS: dict[str, Any] = {name: None for name in TraceEvent.model_fields}
#: ints a float field takes as they are (pydantic converts them with ``float``; beyond 2**53 it is left to it)
_EXACT_INT = 2**53
_new = object.__new__
_set = object.__setattr__


def _utf8(value: str) -> bool:
    """Can ``value`` be encoded as UTF-8? (pydantic refuses a lone surrogate: ``string_unicode``)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fast_event(data: dict[str, Any]) -> TraceEvent | None:
    """The event ``TraceEvent.model_validate(data)`` returns, built without pydantic; None when not certain.

    Handles the common well-formed shape only: every key a field other than ``attributes`` (no extra
    fields), ``ts`` in epoch milliseconds (an ``int``), every value of the exact type the field holds
    (``int`` for an amount is converted as pydantic converts it) and within its limits. Anything else,
    including everything pydantic would reject, returns None: the caller validates with pydantic, so
    rejects keep their reasons and details. The result equals pydantic's field for field (``__dict__``,
    ``model_fields_set``), which ``tests/contract/test_fast_event.py`` compares on hostile inputs.
    """
    if type(data) is not dict or data.get("schema_version") != "1" or type(data["schema_version"]) is not str:
        return None
    ts = data.get("ts")
    if type(ts) is not int or not 0 <= ts < _EXACT_INT:
        return None
    seconds = ts / 1000.0
    if seconds > time.time() + MAX_FUTURE_S:
        return None
    values = dict(_DEFAULTS)
    fast = _FAST
    for name, value in data.items():
        spec = fast.get(name)
        if spec is None:
            if name == "schema_version" or name == "ts":
                continue
            return None  # attributes, an extra field (or a non-string key): pydantic
        if value is None:
            if name == "event_id" or name == "agent_id" or name == "kind":
                return None  # required
            values[name] = None
            continue
        how, arg = spec
        tv = type(value)
        if how == _TEXT:
            if tv is not str or len(value) > MAX_TEXT_LEN or not _utf8(value):
                return None
        elif how == _CHOICE:
            if tv is not str or value not in arg:
                return None
        elif how == _AMOUNT:
            if tv is float:
                if not (0.0 <= value < math.inf):  # NaN, inf and negatives fail this
                    return None
            elif tv is int and 0 <= value <= _EXACT_INT:
                value = float(value)
            else:
                return None
        elif how == _SCOPE_ID:
            if (tv is not str or not 0 < len(value) <= MAX_ID_LEN or not _utf8(value)
                    or _id_problem(arg, value) is not None):
                return None
        elif how == _ID:
            if tv is not str or not 0 < len(value) <= MAX_ID_LEN or not _utf8(value):
                return None
        elif how == _ATTEMPT:
            if tv is not int or not 1 <= value <= _EXACT_INT:
                return None
        elif tv is not bool:  # _FLAG
            return None
        values[name] = value
    kind = values["kind"]
    if values["event_id"] is None or values["agent_id"] is None or kind is None:
        return None
    if (kind == "tool_call" and values["tool"] is None) or (kind == "task_outcome" and values["outcome"] is None):
        return None
    values["schema_version"] = "1"
    values["ts"] = seconds
    values["attributes"] = {}
    event = _new(TraceEvent)
    _set(event, "__dict__", values)
    _set(event, "__pydantic_fields_set__", set(data))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event
