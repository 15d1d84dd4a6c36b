"""Property tests for decode_message: it never raises, and accounts for every element.

Every outcome is an accepted TraceEvent or a Reject with a reason from REJECT_REASONS; a readable
batch yields exactly one outcome per element; anything else yields exactly one outcome.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta, timezone

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contract.decode import MAX_BATCH_EVENTS, decode_message
from streams.contract.schema import KINDS, MAX_FUTURE_S, TraceEvent
from helpers.streams import AGENT, KEY, check_outcome, event

MAX_BYTES = 64 * 1024
FIELDS = sorted(TraceEvent.model_fields)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # write nothing into the shared checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

keys = st.sampled_from([KEY, None, b"", b"other-agent", b"\xff\xfe"]) | st.binary(max_size=12)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # includes ints beyond 64 bits
    | st.floats()  # includes NaN / Infinity, which json.dumps writes as bare literals
    | st.text(max_size=40)
    | st.sampled_from(["1", "2", "", *KINDS, "2026-11-01T00:00:00Z", "2026-11-01T00:00:00", "x" * 129])
)
field_names = st.sampled_from(FIELDS) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(field_names, children, max_size=6),
    max_leaves=30,
)


def encode(doc: object) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def expected_outcomes(key: bytes | None, value: bytes | None) -> int | None:
    """Element count of a readable batch; None when the message yields exactly one outcome."""
    if not value or len(value) > MAX_BYTES:
        return None
    if key:
        try:
            key.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, list) and 0 < len(doc) <= MAX_BATCH_EVENTS:
        return len(doc)
    return None


def run(key: bytes | None, value: bytes | None):
    events, rejects = decode_message(key, value, max_bytes=MAX_BYTES)  # must never raise
    check_outcome(events, rejects)
    n = expected_outcomes(key, value)
    if n is None:
        assert len(events) + len(rejects) == 1
        assert all(r.index is None for r in rejects)
    else:
        assert len(events) + len(rejects) == n
        indices = [r.index for r in rejects]
        assert len(set(indices)) == len(indices) and all(i is not None and 0 <= i < n for i in indices)
    key_text = key.decode() if key and n is not None else None
    horizon = time.time() + MAX_FUTURE_S + 60
    for ev in events:
        assert ev.schema_version == "1" and ev.kind in KINDS
        assert ev.ts <= horizon
        if key_text is not None:
            assert ev.agent_id == key_text
    return events, rejects


@FUZZ
@given(key=keys, value=st.none() | st.binary(max_size=600))
def test_random_bytes_never_crash(key, value):
    run(key, value)


@FUZZ
@given(key=keys, doc=json_values | st.lists(json_values, max_size=6))
def test_random_json_shapes_never_crash(key, doc):
    run(key, encode(doc))


@st.composite
def mutated_events(draw) -> dict:
    ev = event(draw(st.sampled_from(KINDS)))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            ev.pop(name, None)
        else:
            ev[name] = draw(json_values)
    for _ in range(draw(st.integers(0, 2))):
        ev[draw(st.text(max_size=20))] = draw(json_values)
    return ev


@FUZZ
@given(bad=st.lists(mutated_events(), min_size=1, max_size=5), at=st.integers(0, 5))
def test_mutated_events_in_a_batch(bad, at):
    pristine = event("tool_call")
    batch = list(bad)
    batch.insert(min(at, len(batch)), pristine)
    value = encode(batch)
    events, _ = run(KEY, value)
    if expected_outcomes(KEY, value) is not None:
        # the batch was readable: the untouched event survives whatever its neighbours hold
        assert pristine["event_id"] in [e.event_id for e in events]


@FUZZ
@given(ev=mutated_events())
def test_mutated_single_event(ev):
    run(KEY, encode(ev))


offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)).map(
    lambda d: timezone(timedelta(minutes=round(d.total_seconds() / 60)))
)
timestamps = (
    st.integers()
    | st.floats()
    | st.text(max_size=70)
    | st.datetimes(timezones=st.none() | offsets).map(lambda d: d.isoformat())
    | st.from_regex(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)?\Z")
)


@FUZZ
@given(ts=timestamps)
def test_any_timestamp_value_never_crashes(ts):
    events, rejects = run(KEY, encode(event(ts=ts)))
    if events:
        assert events[0].ts <= time.time() + MAX_FUTURE_S + 60
    else:
        assert rejects[0].reason in {"schema", "future_timestamp", "invalid_json"}


def test_fuzz_oracle_agrees_on_known_cases():
    """The accounting oracle itself: a readable batch counts elements, anything else counts one."""
    assert expected_outcomes(KEY, orjson.dumps([event(), 1, None])) == 3
    assert expected_outcomes(KEY, orjson.dumps(event())) is None
    assert expected_outcomes(b"\xff", orjson.dumps([event()])) is None
    assert expected_outcomes(KEY, b"[]") is None
    events, rejects = run(KEY, orjson.dumps([event(), 1, event(agent_id=AGENT + "x")]))
    assert len(events) == 1 and [r.index for r in rejects] == [1, 2]
