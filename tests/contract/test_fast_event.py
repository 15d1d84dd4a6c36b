"""#19: :func:`streams.contract.schema.fast_event` (validation without pydantic for the common shape) builds exactly
the event pydantic builds, and hands everything else to pydantic, so rejects keep their reasons and details.

The reference is ``TraceEvent.model_validate`` alone (the decoder before #19). Inputs start from well-formed
events and are attacked field by field: wrong types, bools for ints and ints for bools, floats for ints, NaN
and infinities, negatives, huge and beyond-64-bit numbers, ids at and past their length limits, control
characters and the reserved ``/tool:``, unicode, future and ancient timestamps, RFC 3339 strings, missing
required fields, extra fields, ``attributes`` and explicit nulls.
"""

from __future__ import annotations

import math
import time

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.contract.decode import classify, decode_message
from streams.contract.schema import KINDS, TraceEvent, fast_event

SETTINGS = settings(max_examples=600, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
NOW_MS = int(time.time() * 1000)
FIELDS = list(TraceEvent.model_fields)


def base_events() -> list[dict]:
    """Well-formed events of every kind, in the bench's shapes and others."""
    common = {"schema_version": "1", "event_id": "e-1", "ts": NOW_MS - 3_600_000, "agent_id": "bot-1"}
    return [
        {**common, "kind": "tool_call", "tool": "search", "status": "ok", "latency_ms": 12.5, "cost_usd": 0.001,
         "tenant": "t1", "task_id": "bot-1:3", "attempt": 1},
        {**common, "kind": "llm_call", "model": "m", "input_tokens": 500, "output_tokens": 100, "latency_ms": 400.0},
        {**common, "kind": "monitor_flag", "tool": "shell", "severity": "low", "monitor": "guard", "action": "warned"},
        {**common, "kind": "incident", "tool": "db.query", "severity": "critical"},
        {**common, "kind": "task_outcome", "outcome": "success", "attempt": 2, "attempt_kind": "trial",
         "intervened": False, "human_minutes": 3, "session_id": "s", "drill_id": "d-1"},
        {**common, "kind": "refusal", "should_refuse": True, "error_type": "E", "tool_call_id": "c"},
        {**common, "kind": "escalation"},
    ]


texts = st.one_of(
    st.text(max_size=3), st.text(min_size=120, max_size=140), st.text(min_size=250, max_size=260),
    st.text(alphabet=st.characters(codec=None, categories=("Cs", "Lo", "Cc")), max_size=4),  # lone surrogates too
    st.sampled_from(["", "a", "x" * 128, "x" * 129, "x" * 256, "x" * 257, "a/tool:b", "a/b", "tab\there", "nl\n",
                     "nul\x00", "esc\x1b[31m", "del\x7f", "é😀", "\u202e",
                     "\ud800", "a\udfffb", "😀\ud83d", "sh%65ll", "%ff", "x%2Ftool%3Ay", "1", "2",
                     "ok", "error", "Tool_Call", *KINDS, "low", "critical", "retry", "trial", "success", "warned",
                     "2026-11-01T00:00:00Z", "2026-11-01T00:00:00", "1790000000000"]))
numbers = st.one_of(
    st.integers(-5, 5), st.integers(), st.integers(min_value=2**53 - 2, max_value=2**53 + 2),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2), st.floats(), st.floats(-1e3, 1e3),
    st.sampled_from([0, 0.0, -0.0, 1, 1.0, 2.5, math.nan, math.inf, -math.inf, 1e308, 5e-324, 10**400]))
timestamps = st.one_of(
    st.sampled_from([0, 1, -1, NOW_MS, NOW_MS + 3_600_000, NOW_MS + 86_400_000 + 3_600_000, 10**13, 10**16,
                     2**53, 2**53 + 1, 2**63, 10**30, float(NOW_MS), True, False, None, "", "now"]),
    st.integers(0, NOW_MS + 80_000_000), st.integers(NOW_MS + 90_000_000, 2**70), st.integers(max_value=-1),
    st.floats(), texts)
values = st.one_of(st.none(), st.booleans(), numbers, texts, st.lists(st.integers(), max_size=2),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(FIELDS), values),
    st.tuples(st.just("set"), st.just("ts"), timestamps),
    st.tuples(st.just("set"), st.sampled_from(["kind", "status", "severity", "action", "outcome", "attempt_kind",
                                               "schema_version"]), texts),
    st.tuples(st.just("del"), st.sampled_from(FIELDS), st.none()),
    st.tuples(st.just("set"), st.text(max_size=8), values),  # extra fields (or a field by chance)
    st.tuples(st.just("set"), st.just("attributes"), st.dictionaries(st.text(max_size=4), values, max_size=3)),
)


def reference(doc: dict) -> TraceEvent | tuple[str, str]:
    """What the decoder did before #19: pydantic, or the reject's (reason, detail)."""
    try:
        return TraceEvent.model_validate(doc)
    except ValidationError as exc:
        return classify(exc)


def assert_same_event(got: TraceEvent, want: TraceEvent) -> None:
    assert type(got) is TraceEvent
    assert list(got.__dict__) == list(want.__dict__)
    for name, value in want.__dict__.items():  # types too: 1 == 1.0 would hide an int where pydantic gives a float
        assert type(got.__dict__[name]) is type(value), name
        assert got.__dict__[name] == value, name
    assert got.model_fields_set == want.model_fields_set
    assert got.__pydantic_extra__ == want.__pydantic_extra__ and got.__pydantic_private__ == want.__pydantic_private__
    assert got == want and repr(got) == repr(want) and got.model_dump() == want.model_dump()
    assert got.model_copy(update={"tool": "x"}).tool == "x"


def check(doc: dict) -> None:
    want = reference(dict(doc))
    fast = fast_event(dict(doc))
    if isinstance(want, tuple):
        assert fast is None, (doc, want)  # a reject is pydantic's to make
    elif fast is not None:
        assert_same_event(fast, want)
    # the decoder (fast path first) gives the reference's outcome, through JSON when the document is JSON
    try:
        line = orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):
        return
    loaded = orjson.loads(line)
    want = reference(loaded)
    good, bad = decode_message(None, line, max_bytes=1 << 20)
    if isinstance(want, tuple):
        assert not good and [(r.reason, r.detail) for r in bad] == [want]
    else:
        assert not bad and len(good) == 1
        assert_same_event(good[0], want)


def test_the_common_shapes_take_the_fast_path() -> None:
    for doc in base_events():
        fast = fast_event(dict(doc))
        assert fast is not None, doc
        assert_same_event(fast, TraceEvent.model_validate(doc))


def test_the_bench_file_takes_the_fast_path(tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bb", Path(__file__).resolve().parents[2] / "bench" / "bench_backtest.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    path = tmp_path / "t.jsonl"
    mod.generate(path, n=2000, agents=20)
    for line in path.read_bytes().splitlines():
        doc = orjson.loads(line)
        fast = fast_event(doc)
        assert fast is not None
        assert_same_event(fast, TraceEvent.model_validate(doc))


@SETTINGS
@given(st.sampled_from(range(7)), st.lists(mutation, min_size=1, max_size=4))
def test_attacked_events_decode_as_with_pydantic_alone(which: int, mutations: list) -> None:
    doc = dict(base_events()[which])
    for op, name, value in mutations:
        if op == "del":
            doc.pop(name, None)
        else:
            doc[name] = value
    check(doc)


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=12))
def test_arbitrary_objects_decode_as_with_pydantic_alone(doc: dict) -> None:
    check(doc)


@SETTINGS
@given(st.sampled_from(range(7)), st.sampled_from(FIELDS), st.one_of(numbers, st.booleans(), texts, st.none()))
def test_one_field_attacked_at_a_time(which: int, name: str, value: object) -> None:
    check({**base_events()[which], name: value})
