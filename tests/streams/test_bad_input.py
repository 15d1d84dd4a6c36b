"""Bad input on agent-traces: one test per class, exact reject reason, good neighbours unharmed.

Element-level problems are tested inside a batch ``[good, bad, good]``: the bad element must be
rejected with the exact reason at index 1 and both good events must still be accepted (DESIGN.md:
"Each event of a batch is accepted or rejected on its own"). Problems that make the whole message
unreadable (empty, too large, not UTF-8, not JSON, wrong top-level shape) are message-level
rejects (``index`` None); for those we check that they do not poison the good messages around them.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.support import shared_data
from streams.contract.decode import MAX_BATCH_EVENTS, REJECT_REASONS, decode_message
from streams.engine.labels import OTHER, LabelCap
from streams.worker.metrics import Metrics, gauge
from streams.engine.pipeline import TracePipeline
from streams.contract.schema import MAX_ATTRIBUTE_VALUE_LEN, MAX_ATTRIBUTES, MAX_ID_LEN, TraceEvent
from streams.settings import Settings
from helpers.streams import no_tripwire_env  # noqa: F401  (autouse)
from helpers.streams import DEFAULT_MAX_BYTES, DROP, KEY, TS_MS, check_outcome, dumps, event, sandwich



def decode(value, key=KEY, max_bytes=DEFAULT_MAX_BYTES, **kw):
    events, rejects = decode_message(key, value, max_bytes=max_bytes, **kw)
    check_outcome(events, rejects)
    return events, rejects


def assert_element_reject(bad, reason: str, key: bytes | None = KEY):
    """``bad`` in the middle of a batch: rejected with ``reason`` at index 1, neighbours accepted."""
    value, good_ids = sandwich(bad)
    events, rejects = decode(value, key=key)
    assert [(r.reason, r.index) for r in rejects] == [(reason, 1)], [(r.reason, r.detail) for r in rejects]
    assert [e.event_id for e in events] == good_ids
    return rejects[0]


def assert_message_reject(value, reason: str, key: bytes | None = KEY, **kw):
    events, rejects = decode(value, key=key, **kw)
    assert events == []
    assert [(r.reason, r.index) for r in rejects] == [(reason, None)], [(r.reason, r.detail) for r in rejects]
    return rejects[0]


def assert_accepted(ev: dict, key: bytes | None = KEY) -> TraceEvent:
    events, rejects = decode(dumps(ev), key=key)
    assert rejects == [], [(r.reason, r.detail) for r in rejects]
    assert [e.event_id for e in events] == [ev["event_id"]]
    return events[0]


# --------------------------------------------------------------------------- message-level classes

def test_non_json_is_invalid_json():
    assert_message_reject(b"this is not json", "invalid_json")
    assert_message_reject(b'{"schema_version": "1",', "invalid_json")  # truncated
    assert_message_reject(b"[" + dumps(event()) + b",]", "invalid_json")  # trailing comma


def test_invalid_utf8_value_is_invalid_utf8():
    ev = dumps(event(session_id="PLACEHOLDER"))
    assert_message_reject(ev.replace(b"PLACEHOLDER", b"\xff\xfe\xc3("), "invalid_utf8")
    assert_message_reject(b"\x80\x81\x82", "invalid_utf8")


def test_invalid_utf8_key_is_invalid_utf8():
    assert_message_reject(dumps(event()), "invalid_utf8", key=b"\xffagent")


@pytest.mark.parametrize("value", [b"", None], ids=["empty-bytes", "null"])
def test_empty_message_is_empty(value):
    assert_message_reject(value, "empty")


def test_empty_array_is_empty():
    assert_message_reject(b"[]", "empty")
    assert_message_reject(b"  [ ]  ", "empty")


@pytest.mark.parametrize("value", [b"42", b"-1.5", b'"an event"', b"null", b"true"])
def test_non_object_top_level_is_not_object(value):
    assert_message_reject(value, "not_object")


@pytest.mark.parametrize("element", [b"42", b'"text"', b"null", b"false", b"[]", b"[" + dumps(event()) + b"]"],
                         ids=["number", "string", "null", "bool", "empty-array", "nested-array"])
def test_non_object_batch_element_is_not_object(element):
    assert_element_reject(element, "not_object")


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf"],
)
def test_nan_and_infinity_literals_are_invalid_json(literal):
    value = dumps(event("llm_call"))[:-1] + b',"latency_ms":' + literal + b"}"
    assert_message_reject(value, "invalid_json")
    assert_message_reject(literal, "invalid_json")


def test_array_nesting_bomb_is_invalid_json_not_recursion_error():
    assert_message_reject(b"[" * 100_000, "invalid_json")
    assert_message_reject(b"[" * 100_000 + b"]" * 100_000, "invalid_json")
    assert_message_reject(b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "invalid_json")


def test_deep_object_in_extra_field_is_schema_not_crash():
    # deep enough to pass the JSON parser (depth < 1024) but too deep to re-serialise into attributes
    deep = b'{"a":' * 600 + b"1" + b"}" * 600
    bad = dumps(event())[:-1] + b',"payload":' + deep + b"}"
    rj = assert_element_reject(bad, "schema")
    assert "payload" in rj.detail
    deep_list = b"[" * 600 + b"]" * 600
    assert_element_reject(dumps(event())[:-1] + b',"payload":' + deep_list + b"}", "schema")
    assert_message_reject(dumps(event())[:-1] + b',"payload":' + deep + b"}", "schema")


def test_deep_object_in_attributes_is_schema():
    deep = b'{"a":' * 600 + b"1" + b"}" * 600
    bad = dumps(event())[:-1] + b',"attributes":{"x":' + deep + b"}}"
    rj = assert_element_reject(bad, "schema")
    assert rj.detail.startswith("attributes.x")


def test_deep_element_past_parser_limit_rejects_the_message():
    too_deep = b"[" + dumps(event()) + b"," + b"[" * 5000 + b"]" * 5000 + b"]"
    assert_message_reject(too_deep, "invalid_json")


@pytest.mark.parametrize(
    "literal", [b"1e400", b"-1e400", str(10**400).encode(), b"1" + b"0" * 5000],
    ids=["1e400", "-1e400", "10**400", "10**5000"],
)
@pytest.mark.parametrize("field", ["latency_ms", "ts", "attempt", "extra_number"])
def test_huge_number_literal_is_handled(field, literal):
    value = b"[" + dumps(event("llm_call"))[:-1] + b',"' + field.encode() + b'":' + literal + b"}]"
    events, rejects = decode(value)
    assert events == []
    assert len(rejects) == 1 and rejects[0].reason in {"invalid_json", "schema"}


def test_large_but_finite_integers():
    # beyond int64 / uint64 but finite: parsed, then validated (no OverflowError)
    big = dumps(event())[:-1] + b',"ts":' + str(10**25).encode() + b"}"  # orjson cannot dump it
    assert_element_reject(big, "schema")  # parsed as a float: not epoch ms
    assert_element_reject(event(ts=2**64 - 1), "future_timestamp")
    ev = assert_accepted(event("llm_call", latency_ms=2**63, input_tokens=2**64 - 1))
    assert ev.latency_ms == float(2**63)


def test_message_over_size_limit_is_too_large():
    assert Settings().max_message_bytes == DEFAULT_MAX_BYTES == 256 * 1024
    base = dumps(event())
    exact = base + b" " * (DEFAULT_MAX_BYTES - len(base))
    assert len(exact) == DEFAULT_MAX_BYTES
    assert len(decode(exact)[0]) == 1
    assert_message_reject(exact + b" ", "too_large")
    # checked before parsing: oversize garbage is too_large, not invalid_json
    assert_message_reject(b"\xff" * (DEFAULT_MAX_BYTES + 1), "too_large")


def test_size_limit_is_configurable():
    base = dumps(event())
    value = base + b" " * (2048 - len(base))
    assert len(decode(value, max_bytes=2048)[0]) == 1
    assert_message_reject(value, "too_large", max_bytes=2047)
    pipe = TracePipeline(Settings(max_message_bytes=1024))
    [dead] = pipe.process(KEY, base + b" " * (1025 - len(base)), topic="t", partition=0, offset=0)
    assert dead.reason == "too_large"
    assert pipe.process(KEY, base, topic="t", partition=0, offset=1) == []


def test_batch_over_max_events_is_batch_too_large():
    over = b"[" + b"0," * MAX_BATCH_EVENTS + b"0]"
    assert_message_reject(over, "batch_too_large", max_bytes=10 * DEFAULT_MAX_BYTES)
    at_limit = b"[" + b"0," * (MAX_BATCH_EVENTS - 1) + b"0]"
    events, rejects = decode(at_limit, max_bytes=10 * DEFAULT_MAX_BYTES)
    assert len(rejects) == MAX_BATCH_EVENTS and {r.reason for r in rejects} == {"not_object"}


def test_bad_signature_is_bad_signature():
    value = dumps(event())
    assert_message_reject(value, "bad_signature", verify=lambda v: "signature does not match")
    events, rejects = decode(value, verify=lambda v: None)
    assert len(events) == 1 and rejects == []


MESSAGE_LEVEL_BAD = {
    "invalid_json": b"not json",
    "invalid_utf8": b'{"a":"\xff"}',
    "empty": b"",
    "not_object": b"42",
    "too_large": b" " * (DEFAULT_MAX_BYTES + 1),
    "batch_too_large": b"[" + b"0," * MAX_BATCH_EVENTS + b"0]",
}


@pytest.mark.parametrize("reason", sorted(MESSAGE_LEVEL_BAD))
def test_message_level_reject_does_not_poison_neighbours(reason):
    pipe = TracePipeline(Settings())
    seen: list[str] = []
    pipe.sink = lambda partition, evs, attested: seen.extend(e.event_id for e in evs)
    first, last = event(), event()
    assert pipe.process(KEY, dumps([first]), topic="t", partition=0, offset=0) == []
    dead = pipe.process(KEY, MESSAGE_LEVEL_BAD[reason], topic="t", partition=0, offset=1)
    assert [d.reason for d in dead] == [reason]
    assert pipe.process(KEY, dumps(last), topic="t", partition=0, offset=2) == []
    assert seen == [first["event_id"], last["event_id"]]


# --------------------------------------------------------------------------- element-level classes

@pytest.mark.parametrize("field", ["schema_version", "event_id", "ts", "agent_id", "kind"])
def test_missing_required_field_is_schema(field):
    rj = assert_element_reject(event(**{field: DROP}), "schema")
    assert field in rj.detail


@pytest.mark.parametrize(
    "field,value",
    [("event_id", 12345), ("ts", True), ("ts", False), ("attempt", "x"), ("agent_id", ["a"]),
     ("latency_ms", "fast"), ("intervened", "maybe"), ("tool", 7)],
)
def test_wrong_type_is_schema(field, value):
    rj = assert_element_reject(event(**{field: value}), "schema")
    assert rj.detail.startswith(field)


@pytest.mark.parametrize("kind", ["tool-call", "TOOL_CALL", "", "span", 3])
def test_unknown_kind_is_unknown_kind(kind):
    assert_element_reject(event(kind=kind), "unknown_kind")


@pytest.mark.parametrize("version", ["2", "1.0", "", 2])
def test_other_schema_version_is_unsupported_schema_version(version):
    assert_element_reject(event(schema_version=version), "unsupported_schema_version")


@pytest.mark.parametrize(
    "field,value",
    [("latency_ms", -1), ("latency_ms", -0.001), ("cost_usd", -0.01), ("input_tokens", -5),
     ("output_tokens", -1), ("human_minutes", -2.5), ("ts", -1), ("ts", -1_793_491_200_000)],
)
def test_negative_numbers_are_schema(field, value):
    rj = assert_element_reject(event("llm_call", **{field: value}), "schema")
    assert rj.detail.startswith(field)


def _rfc3339(seconds: float, z: bool = False) -> str:
    text = datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()
    return text.replace("+00:00", "Z") if z else text


@pytest.mark.parametrize("style", ["epoch_ms", "rfc3339", "rfc3339_z", "rfc3339_offset"])
def test_timestamp_more_than_a_day_ahead_is_future_timestamp(style):
    ahead = time.time() + timedelta(hours=25).total_seconds()
    ts = {
        "epoch_ms": int(ahead * 1000),
        "rfc3339": _rfc3339(ahead),
        "rfc3339_z": _rfc3339(ahead, z=True),
        "rfc3339_offset": datetime.fromtimestamp(ahead, tz=timezone(timedelta(hours=-5))).isoformat(),
    }[style]
    assert_element_reject(event(ts=ts), "future_timestamp")
    assert_element_reject(event(ts="9999-12-31T23:59:59Z"), "future_timestamp")


@pytest.mark.parametrize("style", ["epoch_ms", "rfc3339", "rfc3339_z"])
def test_timestamp_23h_ahead_is_accepted(style):
    ahead = time.time() + timedelta(hours=23).total_seconds()
    ts = {"epoch_ms": int(ahead * 1000), "rfc3339": _rfc3339(ahead), "rfc3339_z": _rfc3339(ahead, z=True)}[style]
    ev = assert_accepted(event(ts=ts))
    assert ev.ts == pytest.approx(ahead, abs=1.0)


def test_timestamp_forms_normalise_to_epoch_seconds():
    assert assert_accepted(event(ts=TS_MS)).ts == TS_MS / 1000
    assert assert_accepted(event(ts="2026-11-01T00:00:00Z")).ts == TS_MS / 1000
    assert assert_accepted(event(ts="2026-11-01T01:00:00+01:00")).ts == TS_MS / 1000


@pytest.mark.parametrize("field", ["agent_id", "tool", "event_id"])
def test_over_long_ids_are_schema(field):
    long = "x" * (MAX_ID_LEN + 1)
    rj = assert_element_reject(event(**{field: long}), "schema")
    assert rj.detail.startswith(field)
    # the boundary itself is fine
    ok = "y" * MAX_ID_LEN
    assert_accepted(event(**{field: ok}), key=ok.encode() if field == "agent_id" else KEY)


@pytest.mark.parametrize("field", ["event_id", "agent_id", "tool"])
def test_empty_ids_are_schema(field):
    assert_element_reject(event(**{field: ""}), "schema")


def test_tool_call_without_tool_is_schema():
    rj = assert_element_reject(event("tool_call", tool=DROP), "schema")
    assert "tool" in rj.detail
    assert_element_reject(event("tool_call", tool=None), "schema")


def test_task_outcome_without_outcome_is_schema():
    rj = assert_element_reject(event("task_outcome", outcome=DROP), "schema")
    assert "outcome" in rj.detail
    assert_element_reject(event("task_outcome", outcome="partial"), "schema")


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_below_one_is_schema(attempt):
    rj = assert_element_reject(event("task_outcome", attempt=attempt), "schema")
    assert rj.detail.startswith("attempt")


@pytest.mark.parametrize("ts", ["2026-11-01T00:00:00", "2026-11-01 00:00:00", "2026-11-01"])
def test_naive_timestamp_without_offset_is_schema(ts):
    rj = assert_element_reject(event(ts=ts), "schema")
    assert "offset" in rj.detail


@pytest.mark.parametrize("ts", ["yesterday", "2026-13-01T00:00:00Z", "1793491200000", "x" * 65, 1.7934912e12])
def test_malformed_timestamp_is_schema(ts):
    assert_element_reject(event(ts=ts), "schema")


@pytest.mark.parametrize("field,value", [("status", "fine"), ("severity", "urgent"), ("action", "ignored")])
def test_enum_fields_out_of_range_are_schema(field, value):
    assert_element_reject(event("monitor_flag", **{field: value}), "schema")


def test_batch_element_with_other_agent_is_key_mismatch_only_that_element():
    rj = assert_element_reject(event(agent_id="someone-else"), "key_mismatch")
    assert "someone-else" in rj.detail
    assert rj.element is not None and orjson.loads(rj.element)["agent_id"] == "someone-else"


def test_single_event_with_other_agent_is_key_mismatch():
    assert_message_reject(dumps(event(agent_id="someone-else")), "key_mismatch")


def test_no_key_means_no_key_check():
    assert_accepted(event(agent_id="anyone"), key=None)


# --------------------------------------------------------------------------- valid but unusual input

WEIRD_AGENTS = [
    'say "hi"',
    "with spaces in it",
    "back\\slash\\",
    "new\nline",
    "tab\tand\r\ncrlf",
    "ünïcödé-エージェント-🤖",
    "{\"json\": [1]}",
    "} # not a comment\\n",
]


@pytest.mark.parametrize("agent", WEIRD_AGENTS)
def test_unusual_agent_ids_are_accepted(agent):
    ev = assert_accepted(event(agent_id=agent), key=agent.encode())
    assert ev.agent_id == agent


def test_unusual_agent_ids_as_label_values_keep_metrics_parseable():
    cap = LabelCap(len(WEIRD_AGENTS))
    rows = [([cap(a), "search", "5m"], 0.25) for a in WEIRD_AGENTS]
    rows.append(([cap("one-too-many"), "search", "5m"], 0.5))
    metrics = Metrics()
    metrics.add_source(lambda: [gauge("tripwire_near_miss_rate", "Near-miss rate.", ["agent", "tool", "window"], rows)])
    text = metrics.exposition().decode("utf-8")
    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses the whole page
    samples = families["tripwire_near_miss_rate"].samples
    assert sorted(s.labels["agent"] for s in samples) == sorted([*WEIRD_AGENTS, OTHER])
    assert {s.labels["agent"]: s.value for s in samples}[OTHER] == 0.5
    assert "tripwire_build_info" in families


def test_unknown_extra_fields_land_in_attributes():
    ev = assert_accepted(
        event(
            region="eu",
            retries=3,
            ratio=0.5,
            flag=True,
            nothing=None,
            nested={"a": [1, 2], "b": {"c": "d"}},
            listy=[1, "x"],
            attributes={"given": "kept"},
        )
    )
    assert ev.attributes == {
        "given": "kept",
        "region": "eu",
        "retries": 3,
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "nested": '{"a":[1,2],"b":{"c":"d"}}',
        "listy": '[1,"x"]',
    }
    assert not hasattr(ev, "region")


def test_long_extra_values_are_truncated_not_rejected():
    ev = assert_accepted(event(note="n" * 5000, blob={"k": "v" * 5000}))
    assert ev.attributes["note"] == "n" * MAX_ATTRIBUTE_VALUE_LEN
    assert len(ev.attributes["blob"]) == MAX_ATTRIBUTE_VALUE_LEN


def test_malformed_attributes_are_not_dropped_by_extras():
    assert_element_reject(event(attributes=["a", "b"], region="eu"), "schema")
    assert_element_reject(event(attributes="text"), "schema")


def test_attributes_over_64_keys_is_schema():
    full = {f"k{i}": i for i in range(MAX_ATTRIBUTES)}
    assert len(assert_accepted(event(attributes=full)).attributes) == MAX_ATTRIBUTES
    rj = assert_element_reject(event(attributes={**full, "one_more": 1}), "schema")
    assert rj.detail.startswith("attributes")


def test_attributes_must_be_scalars():
    assert_element_reject(event(attributes={"x": {"nested": 1}}), "schema")
    assert_element_reject(event(attributes={"x": [1]}), "schema")


# --------------------------------------------------------------------------- real data

def test_toolemu_file_only_over_long_tool_calls_rejected():
    """The ToolEmu data: exactly the 12 ``tool_call`` events whose ``tool`` is model reasoning text go to DLQ.

    Three ``monitor_flag`` events flag those same calls and repeat the over-long ``tool``: they flow
    (the near-miss still counts for the agent) with the text moved to ``attributes.tool_overlong``.
    """
    accepted = 0
    overlong_flags = 0
    rejected: list[tuple[str, int]] = []
    for n, line in enumerate(shared_data("toolemu-trace-v1.jsonl").read_bytes().splitlines()):
        if not line.strip():
            continue
        raw = orjson.loads(line)
        events, rejects = decode(line, key=raw["agent_id"].encode())
        assert len(events) + len(rejects) == 1
        if events:
            accepted += 1
            [ev] = events
            if len(raw.get("tool") or "") > MAX_ID_LEN:
                assert raw["kind"] != "tool_call"
                assert ev.tool is None and ev.attributes["tool_overlong"] == raw["tool"][:1024]
                overlong_flags += 1
        else:
            [rj] = rejects
            assert rj.reason == "schema" and rj.detail.startswith("tool:"), (n, rj)
            assert len(raw["tool"]) > MAX_ID_LEN
            rejected.append((raw["kind"], len(raw["tool"])))
    assert [k for k, _ in rejected] == ["tool_call"] * 12
    assert overlong_flags == 3
    assert accepted == 5876 + 1096 - 12


def test_reject_reasons_are_the_documented_bounded_set():
    assert set(REJECT_REASONS) >= {
        "empty", "too_large", "invalid_utf8", "invalid_json", "not_object", "schema",
        "unsupported_schema_version", "unknown_kind", "future_timestamp", "key_mismatch",
        "batch_too_large",
    }
    assert len(REJECT_REASONS) == len(set(REJECT_REASONS))


@pytest.mark.parametrize("field,value", [
    ("agent_id", "bot\x01"), ("agent_id", "bot\x1b[31m"), ("agent_id", "bot\x7f"), ("agent_id", "a/tool:b"),
    ("tool", "sh\x00ell"), ("tool", "x/tool:y"), ("tenant", "acme/eu"), ("tenant", "ac\x02me"),
])
def test_ids_scope_parsing_would_refuse_are_invalid_id(field, value):
    """The schema uses the scope grammar's own id rules (breakers.scope.validate_id)."""
    kind = "monitor_flag" if field == "tool" else "refusal"
    key = value.encode() if field == "agent_id" else KEY
    good, bad = decode_message(key, dumps(event(kind, **{field: value})), max_bytes=1 << 20)
    assert not good and [r.reason for r in bad] == ["invalid_id"]
    assert bad[0].detail.startswith(field)


@pytest.mark.parametrize("value", ["tab\there", "new\nline", "a/b", "a:b", "CamelCase Tool"])
def test_ids_with_allowed_oddities_still_pass(value):
    assert_accepted(event("monitor_flag", tool=value))
