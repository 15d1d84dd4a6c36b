"""The checked-in JSON Schema for producers matches the pydantic model and agrees with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.contract.decode import decode_message
from streams.contract.schema import KINDS, MAX_ATTRIBUTES, TraceEvent, json_schema
from helpers.streams import DROP, KEY, event

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "trace-event-v1.json"


def current() -> dict:
    return json.loads(json.dumps(json_schema()))  # normalise tuples etc. to plain JSON


def test_checked_in_schema_matches_the_model():
    checked_in = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert checked_in == current(), (
        f"{SCHEMA_FILE.relative_to(SCHEMA_FILE.parents[1])} is out of date with streams.contract.schema.TraceEvent: "
        "run `make schema` and commit the result"
    )


def test_schema_required_fields_and_enums_follow_the_model():
    schema = current()
    required_in_model = [name for name, f in TraceEvent.model_fields.items() if f.is_required()]
    assert schema["required"] == required_in_model == ["schema_version", "event_id", "ts", "agent_id", "kind"]
    assert set(schema["properties"]) == set(TraceEvent.model_fields)
    assert schema["properties"]["kind"]["enum"] == list(KINDS)
    assert schema["properties"]["schema_version"]["const"] == "1"
    assert schema["properties"]["attributes"]["maxProperties"] == MAX_ATTRIBUTES
    assert schema["additionalProperties"] is True  # unknown fields are accepted
    conditional = {rule["if"]["properties"]["kind"]["const"]: rule["then"]["required"] for rule in schema["allOf"]}
    assert conditional == {"tool_call": ["tool"], "task_outcome": ["outcome"]}


# (event, accepted by both the model and the JSON Schema?)
CASES = {
    **{f"good-{k}": (event(k), True) for k in KINDS},
    "good-extra-field": (event(region="eu", nested={"a": 1}), True),
    "good-rfc3339": (event(ts="2026-11-01T00:00:00Z"), True),
    **{f"missing-{f}": (event(**{f: DROP}), False) for f in ("schema_version", "event_id", "ts", "agent_id", "kind")},
    "kind-unknown": (event(kind="span"), False),
    "schema-version-2": (event(schema_version="2"), False),
    "tool-call-without-tool": (event("tool_call", tool=DROP), False),
    "task-outcome-without-outcome": (event("task_outcome", outcome=DROP), False),
    "outcome-unknown": (event("task_outcome", outcome="meh"), False),
    "severity-unknown": (event("incident", severity="urgent"), False),
    "status-unknown": (event(status="fine"), False),
    "attempt-zero": (event("task_outcome", attempt=0), False),
    "latency-negative": (event("llm_call", latency_ms=-1), False),
    "ts-negative": (event(ts=-1), False),
    "event-id-too-long": (event(event_id="e" * 129), False),
    "event-id-int": (event(event_id=7), False),
    "attributes-nested": (event(attributes={"x": {"y": 1}}), False),
    "attributes-too-many": (event(attributes={f"k{i}": i for i in range(MAX_ATTRIBUTES + 1)}), False),
}


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    schema = current()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_schema_agrees_with_the_model(validator, name):
    ev, accepted = CASES[name]
    events, rejects = decode_message(KEY, json.dumps(ev).encode(), max_bytes=1 << 20)
    assert bool(events) is accepted, [(r.reason, r.detail) for r in rejects]
    errors = [e.message for e in validator.iter_errors(ev)]
    assert (not errors) is accepted, errors
