"""TracePipeline (decode -> dedupe -> count -> sink -> dead letters) and RecentIds, without a broker."""

from __future__ import annotations

import base64

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.contract.decode import REJECT_REASONS
from streams.engine.dedupe import RecentIds
from streams.worker.metrics import Metrics, ingest_families
from streams.engine.pipeline import DeadLetter, TracePipeline
from streams.contract.schema import KINDS
from streams.settings import Settings
from helpers.streams import no_tripwire_env  # noqa: F401  (autouse)
from helpers.streams import KEY, TS_MS, dumps, event

TOPIC = "agent-traces"


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[str]]] = []
        self.attested: list[bool] = []

    def __call__(self, partition, events, attested) -> None:
        self.calls.append((partition, [e.event_id for e in events]))
        self.attested.append(attested)

    @property
    def ids(self) -> list[str]:
        return [i for _, ids in self.calls for i in ids]


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def pipe(sink) -> TracePipeline:
    return TracePipeline(Settings(), sink=sink)


#: the worker's wall clock in these tests: a minute after the events' fixed ts
NOW = TS_MS / 1000 + 60


def process(pipe: TracePipeline, value, *, key=KEY, partition=0, offset=0, now=NOW, **kw) -> list[DeadLetter]:
    return pipe.process(key, value, topic=TOPIC, partition=partition, offset=offset, now=now, **kw)


def record(dead: DeadLetter) -> dict:
    return orjson.loads(dead.value)


# --------------------------------------------------------------------------- dedupe

def test_duplicate_event_ids_are_dropped_and_counted(pipe, sink):
    a, b = event(), event("llm_call")
    assert process(pipe, dumps([a, b]), offset=0) == []
    assert process(pipe, dumps([a, b]), offset=1) == []  # redelivery
    assert process(pipe, dumps(b), offset=2) == []  # producer retry
    assert sink.ids == [a["event_id"], b["event_id"]]
    assert pipe.counters.duplicates == 3
    assert pipe.counters.events["tool_call"] == 1 and pipe.counters.events["llm_call"] == 1
    assert pipe.counters.messages == 3


def test_duplicate_inside_one_batch_is_dropped(pipe, sink):
    a = event()
    process(pipe, dumps([a, dict(a), event()]))
    assert sink.ids.count(a["event_id"]) == 1 and len(sink.ids) == 2
    assert pipe.counters.duplicates == 1


def test_sink_not_called_when_everything_is_a_duplicate(pipe, sink):
    a = event()
    process(pipe, dumps(a), offset=0)
    process(pipe, dumps(a), offset=1)
    assert sink.calls == [(0, [a["event_id"]])]


def test_duplicate_after_the_horizon_is_accepted_again(sink):
    pipe = TracePipeline(Settings(dedupe_horizon_s=60), sink=sink)
    a = event()
    process(pipe, dumps(a), now=NOW)
    process(pipe, dumps(a), now=NOW + 59)
    process(pipe, dumps(a), now=NOW + 61)
    assert sink.ids == [a["event_id"], a["event_id"]]
    assert pipe.counters.duplicates == 1


def test_forget_partition_drops_its_memory(pipe, sink):
    a = event()
    process(pipe, dumps(a), partition=3)
    pipe.forget_partition(3)
    process(pipe, dumps(a), partition=3)
    assert sink.ids == [a["event_id"]] * 2
    assert pipe.counters.duplicates == 0


def test_rejected_events_do_not_enter_dedupe_memory(pipe, sink):
    bad = event(kind="bogus")
    process(pipe, dumps(bad), offset=0)
    good = event(event_id=bad["event_id"])  # same id, now valid
    process(pipe, dumps(good), offset=1)
    assert sink.ids == [bad["event_id"]]
    assert pipe.counters.duplicates == 0


# --------------------------------------------------------------------------- dead-letter records

def test_dlq_record_for_a_batch_element_carries_only_that_element(pipe, sink):
    good1, bad, good2 = event(), event(kind="bogus"), event()
    value = dumps([good1, bad, good2])
    [dead] = process(pipe, value, partition=5, offset=42)
    assert dead.reason == "unknown_kind" and dead.key == KEY
    rec = record(dead)
    assert rec["reason"] == "unknown_kind"
    assert rec["detail"].startswith("kind:")
    assert rec["source"] == {"topic": TOPIC, "partition": 5, "offset": 42, "index": 1}
    payload = base64.b64decode(rec["payload_b64"])
    assert orjson.loads(payload) == bad
    assert payload != value
    assert rec["payload_bytes"] == len(payload) and rec["payload_truncated"] is False
    assert base64.b64decode(rec["key_b64"]) == KEY
    assert isinstance(rec["rejected_at"], float)
    assert sink.ids == [good1["event_id"], good2["event_id"]]


def test_dlq_record_for_a_message_reject_carries_the_message(pipe):
    value = b'{"schema_version": "1", oops'
    [dead] = process(pipe, value, partition=2, offset=7)
    rec = record(dead)
    assert rec["reason"] == dead.reason == "invalid_json"
    assert rec["detail"]
    assert rec["source"] == {"topic": TOPIC, "partition": 2, "offset": 7, "index": None}
    assert base64.b64decode(rec["payload_b64"]) == value
    assert rec["payload_bytes"] == len(value) and rec["payload_truncated"] is False


def test_dlq_record_for_a_single_event_reject_carries_the_message(pipe):
    value = dumps(event(agent_id="other-agent"))
    [dead] = process(pipe, value)
    rec = record(dead)
    assert rec["reason"] == "key_mismatch" and rec["source"]["index"] is None
    assert base64.b64decode(rec["payload_b64"]) == value


def test_dlq_record_without_key_and_for_empty_message(pipe):
    [dead] = process(pipe, None, key=None)
    rec = record(dead)
    assert rec["reason"] == "empty"
    assert rec["key_b64"] is None
    assert rec["payload_b64"] == "" and rec["payload_bytes"] == 0 and rec["payload_truncated"] is False


def test_dlq_payload_is_truncated_past_dlq_payload_bytes():
    pipe = TracePipeline(Settings(dlq_payload_bytes=16))
    value = b"not json at all, and rather long " * 10
    [dead] = process(pipe, value)
    rec = record(dead)
    assert base64.b64decode(rec["payload_b64"]) == value[:16]
    assert rec["payload_bytes"] == len(value)
    assert rec["payload_truncated"] is True


def test_dlq_element_payload_is_truncated_too():
    pipe = TracePipeline(Settings(dlq_payload_bytes=20))
    bad = event(kind="bogus", session_id="s" * 100)
    [dead] = process(pipe, dumps([event(), bad]))
    rec = record(dead)
    assert rec["source"]["index"] == 1
    assert base64.b64decode(rec["payload_b64"]) == dumps(bad)[:20]
    assert rec["payload_bytes"] == len(dumps(bad)) and rec["payload_truncated"] is True


def test_dlq_payload_exactly_at_the_limit_is_not_truncated():
    value = b"x" * 64
    pipe = TracePipeline(Settings(dlq_payload_bytes=64))
    rec = record(process(pipe, value)[0])
    assert base64.b64decode(rec["payload_b64"]) == value and rec["payload_truncated"] is False


def test_one_dead_letter_per_rejected_element(pipe):
    value = dumps([event(kind="bogus"), event(), 42, event(schema_version="2")])
    dead = process(pipe, value)
    assert [(d.reason, record(d)["source"]["index"]) for d in dead] == [
        ("unknown_kind", 0), ("not_object", 2), ("unsupported_schema_version", 3)
    ]


# --------------------------------------------------------------------------- counters

def test_counters_per_kind_and_reason(pipe):
    batch = [event(k) for k in KINDS] + [event("tool_call"), event("monitor_flag")]
    process(pipe, dumps(batch), offset=0)
    process(pipe, dumps([event(kind="bogus"), event(ts=-1), 7]), offset=1)
    process(pipe, b"", offset=2)
    c = pipe.counters
    expected = {k: 1 for k in KINDS}
    expected["tool_call"] += 1
    expected["monitor_flag"] += 1
    assert dict(c.events) == expected
    assert {r: n for r, n in c.rejected.items() if n} == {"unknown_kind": 1, "schema": 1, "not_object": 1, "empty": 1}
    assert set(c.rejected) == set(REJECT_REASONS)
    assert c.messages == 3 and c.duplicates == 0


def test_counters_exported_as_documented_metrics(pipe):
    process(pipe, dumps([event("llm_call"), event("llm_call"), event(kind="bogus")]))
    process(pipe, dumps([event("llm_call")]))  # fresh ids
    metrics = Metrics()
    metrics.add_source(lambda: ingest_families(pipe.counters))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(metrics.exposition().decode())
        for s in fam.samples
    }
    assert samples[("tripwire_events_total", (("kind", "llm_call"),))] == 3
    assert samples[("tripwire_events_total", (("kind", "tool_call"),))] == 0
    assert samples[("tripwire_events_rejected_total", (("reason", "unknown_kind"),))] == 1
    assert samples[("tripwire_events_rejected_total", (("reason", "too_large"),))] == 0
    assert samples[("tripwire_messages_total", ())] == 2


def test_bad_message_between_good_ones_costs_nothing(pipe, sink):
    before = [event(), event("llm_call")]
    after = [event("monitor_flag"), event("task_outcome")]
    assert process(pipe, dumps(before), offset=0) == []
    dead = process(pipe, b"\x00garbage\xff", offset=1)
    assert [d.reason for d in dead] == ["invalid_utf8"]
    dead = process(pipe, b"[1, 2", offset=2)
    assert [d.reason for d in dead] == ["invalid_json"]
    assert process(pipe, dumps(after), offset=3) == []
    assert sink.ids == [e["event_id"] for e in before + after]
    assert sum(pipe.counters.events.values()) == 4
    assert sum(pipe.counters.rejected.values()) == 2
    assert pipe.counters.duplicates == 0


# --------------------------------------------------------------------------- RecentIds

def test_recent_ids_horizon():
    seen = RecentIds(horizon_s=10, max_ids=100)
    assert seen.seen_before("a", now=0.0) is False
    assert seen.seen_before("a", now=5.0) is True
    assert seen.seen_before("a", now=10.0) is True  # inside, inclusive
    assert seen.seen_before("a", now=10.5) is False  # expired: counts as new, restarts the clock
    assert seen.seen_before("a", now=15.0) is True


def test_recent_ids_expire_forgets_old_ids():
    seen = RecentIds(horizon_s=10, max_ids=100)
    for i, t in enumerate([0.0, 1.0, 2.0, 20.0]):
        seen.seen_before(f"id{i}", now=t)
    assert seen.expire(now=11.5) == 2
    assert len(seen) == 2
    assert seen.seen_before("id0", now=11.5) is False
    assert seen.seen_before("id2", now=11.5) is True
    assert seen.expire(now=11.5) == 0


def test_recent_ids_max_ids_evicts_oldest():
    seen = RecentIds(horizon_s=1e9, max_ids=3)
    for i in range(5):
        assert seen.seen_before(f"id{i}", now=float(i)) is False
    assert len(seen) == 3
    assert seen.seen_before("id0", now=5.0) is False  # evicted, so new again
    assert seen.seen_before("id4", now=5.0) is True
    assert len(seen) == 3


def test_recent_ids_state_round_trip():
    seen = RecentIds(horizon_s=60, max_ids=10)
    seen.seen_before("a", now=1.0)
    seen.seen_before("b", now=2.0)
    other = RecentIds(horizon_s=60, max_ids=10)
    other.load_state(orjson.loads(orjson.dumps(seen.to_state())))
    assert other.to_state() == [["a", 1.0], ["b", 2.0]]
    assert other.seen_before("a", now=30.0) is True


def test_a_message_whose_processing_raises_is_dead_lettered_not_fatal(sink, monkeypatch) -> None:
    """A bug on one message costs that message (DLQ ``internal_error``), not the worker or the next one."""
    import streams.engine.pipeline as pipeline_module

    pipe = TracePipeline(Settings(), sink=sink)
    real = pipeline_module.decode_message
    calls = []

    def decode(key, value, **kw):
        calls.append(value)
        if len(calls) == 1:
            raise KeyError("bug")
        return real(key, value, **kw)

    monkeypatch.setattr(pipeline_module, "decode_message", decode)
    dead = pipe.process(KEY, dumps(event(event_id="e1")), topic=TOPIC, partition=0, offset=7)
    assert [d.reason for d in dead] == ["internal_error"]
    record = orjson.loads(dead[0].value)
    assert record["reason"] == "internal_error" and record["source"]["offset"] == 7
    assert pipe.counters.rejected["internal_error"] == 1
    assert pipe.process(KEY, dumps(event(event_id="e2")), topic=TOPIC, partition=0, offset=8) == []
    assert sink.ids == ["e2"]
