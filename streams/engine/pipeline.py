"""The per-message work of a worker, free of faust: decode, validate, verify, dedupe, count.

The faust agent hands each Kafka message to :meth:`TracePipeline.process` and
publishes the dead-letter records it returns. Keeping this synchronous and
transport-free lets the benchmarks and tests drive it directly, and keeps faust a
thin, replaceable layer.

Per event, after decoding (each a DLQ reason, counted in ``tripwire_events_rejected_total``):

* ``bad_signature`` — :meth:`SignaturePolicy.event_problem <streams.contract.signing.SignaturePolicy.event_problem>`:
  unsigned where a signature is required, outside the signing key's binding, drill traffic without the drill key;
* ``ts_future`` — dated more than ``max_future_skew_s`` past the worker's wall clock (never clamped);
* ``replayed`` — in a signed message, older than the partition's *signed watermark* (the newest signed event
  ts accepted on that partition) minus ``signature_max_age_s``. Inside that window the dedupe memory drops a
  replay (``signature_max_age_s <= dedupe_horizon_s``). The watermark is the stream's own, not the consumer's
  clock, so a worker catching up after an outage refuses nothing; it is checkpointed with the dedupe memory.

The sink gets ``(partition, fresh events, attested)``: ``attested`` is True when the message was validly
signed and its key is bound to every event in it (events outside the binding were refused above).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass

import orjson

from streams.contract.decode import REPLAYED, TS_FUTURE, Reject, decode_message, ts_future_problem
from streams.contract.dlq import dlq_record
from streams.contract.schema import TraceEvent
from streams.contract.signing import DEFAULT_DRILL_PREFIX, SignaturePolicy
from streams.engine.dedupe import RecentIds
from streams.engine.tallies import IngestCounters
from streams.settings import Settings

log = logging.getLogger("tripwire.pipeline")

#: changelog keys of the dedupe checkpoints: ``\x00dedupe:<partition>:<slot>`` (never an agent id)
DEDUPE_KEY_PREFIX = "\x00dedupe:"
#: event ids per dedupe checkpoint chunk (~50 bytes each: a chunk stays far below Kafka's 1 MB)
DEDUPE_CHUNK_IDS = 4000


@dataclass(slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes
    reason: str


#: ``sink(partition, fresh events, attested)``: attested = the message was validly signed by a key bound to them
EventSink = Callable[[int, list[TraceEvent], bool], None]


class TracePipeline:
    """Decode -> validate -> dedupe -> count -> hand accepted events to ``sink``."""

    def __init__(self, settings: Settings, sink: EventSink | None = None, *,
                 drill_prefix: str = DEFAULT_DRILL_PREFIX) -> None:
        self.settings = settings
        self.counters = IngestCounters()
        self.sink = sink
        self.signing = SignaturePolicy.of(settings, drill_prefix)
        #: per partition: the newest ts of a signed event accepted (the replay window's upper end)
        self._signed_wm: dict[int, float] = {}
        #: per partition: the signed watermark as of the last checkpoint that saved every id (what is written)
        self._signed_wm_saved: dict[int, float] = {}
        self._recent: dict[int, RecentIds] = {}
        #: dedupe checkpoints: ids inserted per partition (ever, counting restored ones) and at the last checkpoint
        self._inserted: dict[int, int] = {}
        self._checkpointed: dict[int, int] = {}
        #: agent of each id inserted since its partition's last complete dedupe checkpoint (see checkpoint_dedupe)
        self._pending: dict[int, dict[str, str]] = {}
        self._slots = -(-settings.dedupe_max_ids // DEDUPE_CHUNK_IDS) + 1

    def recent_ids(self, partition: int) -> RecentIds:
        recent = self._recent.get(partition)
        if recent is None:
            recent = self._recent[partition] = RecentIds(
                self.settings.dedupe_horizon_s, self.settings.dedupe_max_ids
            )
        return recent

    def held_partitions(self) -> list[int]:
        """The partitions whose dedupe memory this pipeline holds."""
        return list(self._recent)

    def forget_partition(self, partition: int) -> None:
        """Drop per-partition memory after the partition moved to another worker."""
        self._recent.pop(partition, None)
        self._inserted.pop(partition, None)
        self._checkpointed.pop(partition, None)
        self._pending.pop(partition, None)
        self._signed_wm.pop(partition, None)
        self._signed_wm_saved.pop(partition, None)

    def signed_watermark(self, partition: int) -> float | None:
        """The newest signed event ts accepted on ``partition`` (None: no signed event yet)."""
        return self._signed_wm.get(partition)

    def process(
        self,
        key: bytes | None,
        value: bytes | None,
        *,
        topic: str,
        partition: int,
        offset: int,
        headers: list[tuple[str, bytes]] | None = None,
        now: float | None = None,
    ) -> list[DeadLetter]:
        """Process one message; return the dead letters to publish.

        Never raises: a message whose processing fails unexpectedly (a bug, not bad input:
        bad input has its own reasons) is dead-lettered whole as ``internal_error``, so
        it can neither stop the worker nor stall the offsets of the messages after it.
        """
        try:
            return self._process(key, value, topic=topic, partition=partition, offset=offset, headers=headers,
                                 now=now)
        except Exception as exc:  # noqa: BLE001 - a worker never dies of one message
            log.exception("processing a message of %s[%d]@%d failed; dead-lettered as internal_error",
                          topic, partition, offset)
            self.counters.rejected["internal_error"] += 1
            reject = Reject("internal_error", f"{type(exc).__name__}: {exc}"[:300])
            return [DeadLetter(key, dlq_record(reject, topic=topic, partition=partition, offset=offset, key=key,
                                               value=value, payload_limit=self.settings.dlq_payload_bytes),
                               "internal_error")]

    def _process(self, key: bytes | None, value: bytes | None, *, topic: str, partition: int, offset: int,
                 headers: list[tuple[str, bytes]] | None, now: float | None) -> list[DeadLetter]:
        counters = self.counters
        counters.messages += 1
        settings = self.settings
        now = time.time() if now is None else now
        verify = None
        key_id: str | None = None
        signing = self.signing
        if signing is not None and value and len(value) <= settings.max_message_bytes:
            key_id, problem = signing.seal(key, value, headers)
            if problem is not None:
                verify = lambda v: problem  # noqa: E731 - decode_message reports it as bad_signature
        events, rejects = decode_message(key, value, max_bytes=settings.max_message_bytes, verify=verify)
        if events:
            events = self._screen(events, value, rejects, key_id, partition, now)
        dead: list[DeadLetter] = []
        for reject in rejects:
            counters.rejected[reject.reason] += 1
            dead.append(
                DeadLetter(
                    key,
                    dlq_record(reject, topic=topic, partition=partition, offset=offset, key=key, value=value,
                               payload_limit=settings.dlq_payload_bytes),
                    reject.reason,
                )
            )
        if events:
            recent = self.recent_ids(partition)
            fresh = []
            tally = counters.events
            for ev in events:
                if recent.seen_before(ev.event_id, now):
                    counters.duplicates += 1
                    continue
                tally[ev.kind] += 1
                fresh.append(ev)
            if fresh:
                self._inserted[partition] = self._inserted.get(partition, 0) + len(fresh)
                pending = self._pending.get(partition)
                if pending is None:
                    pending = self._pending[partition] = {}
                for ev in fresh:
                    pending[ev.event_id] = ev.agent_id
                if len(pending) > settings.dedupe_max_ids:  # never checkpointed (benchmarks): stay bounded
                    for _ in range(len(pending) - settings.dedupe_max_ids):
                        del pending[next(iter(pending))]
                attested = key_id is not None
                if attested:  # the window moves with signed traffic only (ts_future bounds it: <= now + skew)
                    newest = max(ev.ts for ev in fresh)
                    if newest > self._signed_wm.get(partition, float("-inf")):
                        self._signed_wm[partition] = newest
                if self.sink is not None:
                    self.sink(partition, fresh, attested)
        return dead

    def _screen(self, events: list[TraceEvent], value: bytes | None, rejects: list[Reject], key_id: str | None,
                partition: int, now: float) -> list[TraceEvent]:
        """Refuse decoded events: bad_signature (requirement, binding, drill key), ts_future, replayed."""
        signing = self.signing
        check_signing = signing is not None and (key_id is not None or signing.enforcing)
        skew = self.settings.max_future_skew_s
        floor = None
        if key_id is not None and partition in self._signed_wm:
            floor = self._signed_wm[partition] - self.settings.signature_max_age_s
        refused: list[tuple[TraceEvent, str, str]] = []
        keep: list[TraceEvent] = []
        for ev in events:
            problem = signing.event_problem(key_id, ev.agent_id, ev.tenant) if check_signing else None  # type: ignore[union-attr]
            if problem is not None:
                refused.append((ev, "bad_signature", problem))
                continue
            problem = ts_future_problem(ev.ts, now, skew)
            if problem is not None:
                refused.append((ev, TS_FUTURE, problem))
                continue
            if floor is not None and ev.ts < floor:
                refused.append((ev, REPLAYED, f"signed event dated {floor - ev.ts:.0f} s before the replay window "
                                              f"(signature_max_age_s {self.settings.signature_max_age_s:g} behind "
                                              "the newest signed event of its partition)"))
                continue
            keep.append(ev)
        if refused:
            self._refuse(refused, value, rejects)
        return keep

    @staticmethod
    def _refuse(refused: list[tuple[TraceEvent, str, str]], value: bytes | None, rejects: list[Reject]) -> None:
        """Rejects for decoded events, each with its index and element in the batch (for its DLQ record)."""
        try:  # the refusal path only: find each refused event's index in the batch
            doc = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            doc = None
        index: dict[object, int] = {}
        if isinstance(doc, list):
            for i, obj in enumerate(doc):
                if isinstance(obj, dict):
                    index.setdefault(obj.get("event_id"), i)
        for ev, reason, detail in refused:
            i = index.get(ev.event_id)
            rejects.append(Reject(reason, detail, i, orjson.dumps(doc[i]) if i is not None else None))  # type: ignore[index]

    # ------------------------------------------------------------------ dedupe checkpoints
    def checkpoint_dedupe(self, unsaved: Container[str] = ()) -> list[tuple[int, str, bytes]]:
        """(partition, changelog key, value) for the dedupe memory inserted since the last call.

        A partition's ids are cut, in insertion order, into chunks of
        :data:`DEDUPE_CHUNK_IDS`; chunk ``k`` lives under slot ``k % slots`` so the
        compacted changelog keeps about ``dedupe_max_ids`` newest ids per partition.
        The chunk still being filled is rewritten at each checkpoint that adds to it.

        Ids of the ``unsaved`` agents (a capped checkpoint left their state dirty) are
        left out: restored, they would drop the re-read events whose effects were never
        saved. Their chunks are rewritten, with them, once their agents are saved.

        >>> from streams.settings import Settings
        >>> p = TracePipeline(Settings())
        >>> ev = lambda agent, i: {"schema_version": "1", "event_id": f"{agent}-{i}", "ts": 1, "agent_id": agent,
        ...                        "kind": "tool_call", "tool": "t", "status": "ok"}
        >>> for agent in ("a", "b", "a"):
        ...     _ = p.process(agent.encode(), orjson.dumps([ev(agent, 0), ev(agent, 1)]), topic="t", partition=0,
        ...                   offset=0)
        >>> [[i for i, _ in orjson.loads(v)["ids"]] for _, _, v in p.checkpoint_dedupe(unsaved={"b"})]
        [['a-0', 'a-1']]
        >>> [[i for i, _ in orjson.loads(v)["ids"]] for _, _, v in p.checkpoint_dedupe()]
        [['a-0', 'a-1', 'b-0', 'b-1']]
        """
        out: list[tuple[int, str, bytes]] = []
        size = DEDUPE_CHUNK_IDS
        for partition, total in self._inserted.items():
            done = self._checkpointed.get(partition, 0)
            recent = self._recent.get(partition)
            if total <= done or recent is None:
                continue
            pending = self._pending.get(partition, {})
            first = done // size
            tail = recent.newest(total - first * size)  # chunks first.. in order, oldest first
            complete = total  # ids before this position are all saved: later checkpoints start from its chunk
            chunks: list[tuple[int, list[object]]] = []
            for k in range(first, -(-total // size)):
                start = (k - first) * size
                chunk = tail[start:start + size]
                if not chunk:
                    break
                ids = []
                for n, pair in enumerate(chunk):
                    if pending.get(pair[0]) in unsaved:  # type: ignore[arg-type]
                        complete = min(complete, k * size + n)
                    else:
                        pending.pop(pair[0], None)  # type: ignore[arg-type]
                        ids.append(pair)
                chunks.append((k, ids))
            if complete == total and partition in self._signed_wm:
                # only a watermark whose events are all saved: a crash re-reads the rest, which must not be "replayed"
                self._signed_wm_saved[partition] = self._signed_wm[partition]
            signed_wm = self._signed_wm_saved.get(partition)
            for k, ids in chunks:
                doc: dict[str, object] = {"dedupe": 1, "partition": partition, "chunk": k, "ids": ids}
                if signed_wm is not None:
                    doc["signed_wm"] = signed_wm
                out.append((partition, f"{DEDUPE_KEY_PREFIX}{partition}:{k % self._slots}", orjson.dumps(doc)))
            self._checkpointed[partition] = complete
            if complete == total:
                pending.clear()
        return out

    def rewrite_dedupe(self) -> None:
        """Make the next :meth:`checkpoint_dedupe` write every partition's memory again (changelog lost)."""
        for partition, recent in self._recent.items():
            self._inserted[partition] = len(recent)  # renumber the chunks from 0 over what is remembered
        self._checkpointed.clear()

    def restore_dedupe(self, partition: int, chunks: Iterable[bytes]) -> int:
        """Load a partition's dedupe chunks and its signed watermark (from the changelog); returns the ids restored.

        Does nothing when this worker already holds the partition's memory (it is newer).
        """
        if partition in self._recent:
            return 0
        docs = []
        signed_wm: float | None = None
        for raw in chunks:
            try:
                doc = orjson.loads(raw)
                docs.append((int(doc["chunk"]), doc["ids"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            wm = doc.get("signed_wm")
            if isinstance(wm, (int, float)) and not isinstance(wm, bool) and math.isfinite(wm):
                signed_wm = wm if signed_wm is None else max(signed_wm, wm)
        if not docs:
            return 0
        if signed_wm is not None:  # a restart does not reopen the replay window
            self._signed_wm[partition] = self._signed_wm_saved[partition] = float(signed_wm)
        docs.sort(key=lambda d: d[0])
        ids = [pair for _, chunk in docs for pair in chunk][-self.settings.dedupe_max_ids:]
        recent = self.recent_ids(partition)
        recent.load_state(ids)
        last_chunk, last_ids = docs[-1]
        self._inserted[partition] = self._checkpointed[partition] = last_chunk * DEDUPE_CHUNK_IDS + len(last_ids)
        return len(recent)
