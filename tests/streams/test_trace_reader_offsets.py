"""The trace reader's offsets without a broker: what a commit may reach, and stopping at a pause.

The guarantee (docs/operations.md, "Restart"): a partition's committed offset never passes a
message whose effects are not checkpointed. :class:`AckGate` keeps only the first held offset of
each (agent, partition); these tests drive the reader's own ``_process`` and ``commit`` with the
messages of many agents interleaved on a few partitions and compare every commit with a
brute-force reference that remembers every unreleased message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace

from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.worker.acks import AckGate
from streams.worker.trace_reader import TraceReader

TOPIC = "agent-traces"
AGENTS = ("a", "b", "c", "d")


class Processed:
    """Stands in for TracePipeline.process: remembers what it was handed, dead-letters nothing."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def process(self, key, value, *, topic, partition, offset, headers):  # type: ignore[no-untyped-def]
        self.seen.append((partition, offset))
        return []


def reader(pipeline: Processed, commits: list[dict[int, int]]) -> TraceReader:
    async def commit(offsets: Mapping[int, int]) -> bool:
        commits.append(dict(offsets))
        return True

    async def send_dead(key, value, headers):  # type: ignore[no-untyped-def]
        return None

    return TraceReader("unused:9092", TOPIC, "group", pipeline, AckGate(),  # type: ignore[arg-type]
                       send_dead=send_dead, commit=commit)


def record(agent: str, offset: int) -> SimpleNamespace:
    return SimpleNamespace(key=agent.encode(), value=b"{}", offset=offset, headers=())


message = st.tuples(st.just("msg"), st.integers(0, 2), st.sampled_from(AGENTS))
checkpoint = st.tuples(st.just("ckpt"), st.frozensets(st.sampled_from(AGENTS)), st.frozensets(st.sampled_from(AGENTS)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(message, checkpoint), max_size=60))
def test_a_commit_never_passes_a_message_whose_agent_is_not_checkpointed(ops) -> None:  # type: ignore[no-untyped-def]
    commits: list[dict[int, int]] = []
    r = reader(Processed(), commits)
    next_offset = {0: 0, 1: 0, 2: 0}
    unreleased: list[tuple[str, int, int]] = []  # (agent, partition, offset): the reference keeps them all
    committed: dict[int, int] = {}

    async def run() -> None:
        pending: dict[TopicPartition, list[SimpleNamespace]] = {}
        for op in ops:
            if op[0] == "msg":
                _, partition, agent = op
                pending.setdefault(TopicPartition(TOPIC, partition), []).append(record(agent, next_offset[partition]))
                unreleased.append((agent, partition, next_offset[partition]))
                next_offset[partition] += 1
                continue
            if pending:  # a fetched batch is processed before the checkpoint timer runs
                await r._process(pending, r._version)
                pending = {}
            _, written, dirty = op
            keep = set(dirty) - set(written)
            unreleased[:] = [m for m in unreleased if m[0] in keep]
            r.acks.take(written, dirty)
            await r.commit()
            for c in commits:
                committed.update(c)
            for partition, end in next_offset.items():
                if not end:
                    assert partition not in committed
                    continue
                held = [off for _, p, off in unreleased if p == partition]
                assert committed[partition] == min(held, default=end), (partition, committed, unreleased)

    asyncio.run(run())


def test_commit_sends_only_what_moved() -> None:
    commits: list[dict[int, int]] = []
    r = reader(Processed(), commits)

    async def run() -> None:
        await r._process({TopicPartition(TOPIC, 0): [record("a", 0), record("b", 1)],
                          TopicPartition(TOPIC, 1): [record("a", 0)]}, r._version)
        r.acks.take(None)
        await r.commit()
        await r.commit()  # nothing new: no request
        await r._process({TopicPartition(TOPIC, 1): [record("c", 1)]}, r._version)
        r.acks.take({"c"}, {"c"})
        await r.commit()

    asyncio.run(run())
    assert commits == [{0: 2, 1: 1}, {1: 2}]


def test_a_pause_during_a_dead_letter_stops_the_batch_after_that_message() -> None:
    """A rebalance can start while a dead letter is being sent: the message is done (held, its position
    moved), the rest of the fetched batch is left for whoever reads the partition next."""
    pipeline = Processed()
    commits: list[dict[int, int]] = []
    r = reader(pipeline, commits)

    def process(key, value, *, topic, partition, offset, headers):  # type: ignore[no-untyped-def]
        pipeline.seen.append((partition, offset))
        return [SimpleNamespace(key=key, value=b"dead", reason="invalid_json")] if offset == 1 else []

    async def send_dead(key, value, headers):  # type: ignore[no-untyped-def]
        r.pause({0})

    r.pipeline = SimpleNamespace(process=process)  # type: ignore[assignment]
    r.send_dead = send_dead  # type: ignore[assignment]
    r.resume({0})

    async def run() -> None:
        await r._process({TopicPartition(TOPIC, 0): [record("a", n) for n in range(5)]}, r._version)

    asyncio.run(run())
    assert pipeline.seen == [(0, 0), (0, 1)]
    assert r.positions == {0: 2}
    assert r.acks.floor() == {0: 0}


def test_resume_starts_again_at_the_commit_and_rewind_at_zero() -> None:
    r = reader(Processed(), [])
    r.resume({0, 1})
    r.positions.update({0: 7, 1: 9})
    r.committed.update({0: 5, 1: 9})
    r.pause({0, 1})
    assert r.wanted == set()
    r.resume({1})  # faust resumes it after recovery: its next read starts at the group's committed offset
    assert r.wanted == {1} and 1 not in r.positions and 1 not in r.committed and r._restart[1] is None
    assert r.positions == {0: 7}  # a paused partition keeps its position for the revoke-time commit
    assert r.rewind() == 1
    assert r._restart[1] == 0
    r._restart.clear()
    r.positions[1] = 12
    r.resume({1})  # resumed again while being read: it goes on, nothing is handed over twice
    assert r.positions[1] == 12 and 1 not in r._restart


def test_a_dead_letter_too_large_to_send_goes_again_stripped_and_the_batch_goes_on() -> None:
    """A dead letter the producer refuses as too large (a payload limit set high, a huge key) must not make the
    reader fail and re-read the same message forever: it is sent again without the original bytes."""
    import orjson
    from aiokafka.errors import MessageSizeTooLargeError
    from faust.exceptions import ProducerSendError

    from streams.contract.decode import Reject
    from streams.contract.dlq import dlq_record

    pipeline = Processed()
    r = reader(pipeline, [])
    letter = dlq_record(Reject("invalid_json", "x"), topic=TOPIC, partition=0, offset=1, key=b"k" * 900,
                        value=b"v" * 2000, payload_limit=4096)
    sent: list[tuple[bytes | None, bytes]] = []

    def process(key, value, *, topic, partition, offset, headers):  # type: ignore[no-untyped-def]
        pipeline.seen.append((partition, offset))
        return [SimpleNamespace(key=key, value=letter, reason="invalid_json")] if offset == 1 else []

    async def send_dead(key, value, headers):  # type: ignore[no-untyped-def]
        if len(value) + len(key or b"") > 2000:
            try:
                raise MessageSizeTooLargeError("The message is too large")
            except MessageSizeTooLargeError as exc:
                raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        sent.append((key, value))

    r.pipeline = SimpleNamespace(process=process)  # type: ignore[assignment]
    r.send_dead = send_dead  # type: ignore[assignment]
    r.resume({0})
    asyncio.run(r._process({TopicPartition(TOPIC, 0): [record("a", n) for n in range(4)]}, r._version))
    assert pipeline.seen == [(0, n) for n in range(4)]
    assert r.positions == {0: 4}
    assert len(sent) == 1 and sent[0][0] is None
    doc = orjson.loads(sent[0][1])
    assert doc["reason"] == "invalid_json" and doc["source"]["offset"] == 1 and "key_b64" not in doc
    assert r.letters_stripped == 1


def test_a_dead_letter_keeps_no_more_of_the_key_than_of_the_payload() -> None:
    import base64

    import orjson

    from streams.contract.decode import Reject
    from streams.contract.dlq import dlq_record

    doc = orjson.loads(dlq_record(Reject("key_mismatch", "x"), topic=TOPIC, partition=0, offset=0,
                                  key=b"k" * 100_000, value=b"[]", payload_limit=64))
    assert base64.b64decode(doc["key_b64"]) == b"k" * 64 and doc["key_bytes"] == 100_000


def test_a_reader_that_recovered_from_an_error_is_not_reported_failing_while_it_has_nothing_to_read(
        monkeypatch) -> None:
    """/readyz reports the reader's last error while it restarts. A worker with no trace partition to read
    (more workers than partitions, or all paused) whose consumer started again after a failed start must not
    stay 'trace reader restarting' for good: the error is cleared once a consumer is up."""
    import streams.worker.trace_reader as tr

    starts: list[int] = []

    class Consumer:
        def __init__(self, **kwargs):  # type: ignore[no-untyped-def]
            pass

        async def start(self) -> None:
            starts.append(1)
            if len(starts) == 1:
                raise OSError("connection refused")

        def assign(self, tps) -> None:  # type: ignore[no-untyped-def]
            pass

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(tr, "AIOKafkaConsumer", Consumer)
    r = reader(Processed(), [])

    async def run() -> None:
        task = asyncio.create_task(r.run())
        for _ in range(400):
            await asyncio.sleep(0.01)
            if len(starts) >= 2:
                break
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(run())
    assert len(starts) == 2
    assert r.error is None, r.error


def test_after_a_rewind_offsets_held_on_the_lost_log_do_not_hide_the_new_ones() -> None:
    """The broker came back empty: the partition is read again from offset 0 of a new log. An agent left
    dirty by the checkpoint cap still holds its first offset *of the old log* (100); its new message at
    offset 0 must still hold the commit back (hold keeps only the first offset per agent and partition)."""
    commits: list[dict[int, int]] = []
    r = reader(Processed(), commits)
    r.resume({0})

    async def run() -> None:
        await r._process({TopicPartition(TOPIC, 0): [record("a", n) for n in range(100, 103)]}, r._version)
        r.acks.take(set(), {"a"})  # capped checkpoint: a stays dirty, held at 100
        assert r.rewind() == 1
        r._restart.pop(0)  # what the next assignment does (seek to 0)
        await r._process({TopicPartition(TOPIC, 0): [record("a", 0), record("b", 1)]}, r._version)
        r.acks.take({"b"}, {"a", "b"})  # b saved; a still dirty: its new message at 0 is not
        await r.commit()

    asyncio.run(run())
    assert all(c.get(0, 0) <= 0 for c in commits), commits


def test_a_message_finishing_its_dead_letter_after_a_rewind_leaves_no_position_of_the_old_log() -> None:
    """A rewind lands while a dead letter of the old log is being sent: that message must not put its old
    offset back as the partition's position (a commit would then point the new log past records it has)."""
    commits: list[dict[int, int]] = []
    pipeline = Processed()
    r = reader(pipeline, commits)

    def process(key, value, *, topic, partition, offset, headers):  # type: ignore[no-untyped-def]
        pipeline.seen.append((partition, offset))
        return [SimpleNamespace(key=key, value=b"dead", reason="invalid_json")] if offset == 4000 else []

    async def send_dead(key, value, headers):  # type: ignore[no-untyped-def]
        r.rewind()

    r.pipeline = SimpleNamespace(process=process)  # type: ignore[assignment]
    r.send_dead = send_dead  # type: ignore[assignment]
    r.resume({0})
    r._restart.pop(0)

    async def run() -> None:
        await r._process({TopicPartition(TOPIC, 0): [record("a", n) for n in range(3998, 4003)]}, r._version)
        r.acks.take(None)
        await r.commit()

    asyncio.run(run())
    assert all(c.get(0, 0) == 0 for c in commits), commits


def test_a_new_assignment_forgets_the_positions_of_partitions_no_longer_ours() -> None:
    commits: list[dict[int, int]] = []
    r = reader(Processed(), commits)
    r.resume({0, 1})
    asyncio.run(r._process({TopicPartition(TOPIC, 0): [record("a", 0)], TopicPartition(TOPIC, 1): [record("b", 0)]},
                           r._version))
    r.pause({0, 1})
    r.keep_only({1})  # partition 0 went to another worker
    r.acks.take(None)
    asyncio.run(r.commit())
    assert commits == [{1: 1}]
