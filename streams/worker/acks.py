"""Commit a Kafka offset only once the state it produced is checkpointed.

Detector state lives in memory and reaches its changelog every ``checkpoint_interval_s``.
If offsets were committed as soon as a message was processed, a crash between the commit
and the next checkpoint would lose those events for good: committed, so never re-read;
not checkpointed, so not restored. The ingest agent therefore consumes without automatic
acks and parks each message here under its agent (the message key); a checkpoint acks the
messages of the agents it wrote, after the producer flushed them. After a crash the
un-acked messages are read again and the restored dedupe memory (checkpointed in the same
step) drops the ones already counted: no event lost, none counted twice.

>>> class Ev:
...     def __init__(self): self.acked = False
...     def ack(self): self.acked = True
>>> gate = AckGate(); a, b = Ev(), Ev()
>>> gate.hold("agent-a", a); gate.hold("agent-b", b)
>>> done = gate.take(written={"agent-a"}, still_dirty={"agent-b"}); AckGate.release(done)
>>> a.acked, b.acked
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class Ackable(Protocol):
    def ack(self) -> Any: ...


class AckGate:
    """Messages held back from the offset commit, grouped by agent."""

    __slots__ = ("held", "count")

    def __init__(self) -> None:
        self.held: dict[str, list[Ackable]] = {}
        self.count = 0

    def hold(self, agent: str, event: Ackable) -> None:
        bucket = self.held.get(agent)
        if bucket is None:
            self.held[agent] = [event]
        else:
            bucket.append(event)
        self.count += 1

    def take(self, written: Iterable[str] | None = None, still_dirty: Iterable[str] = ()) -> list[Ackable]:
        """Messages whose state is now safe: agents just ``written``, and agents with nothing to
        write (``not in still_dirty``: their messages changed no state, e.g. duplicates or rejects).
        ``written=None`` takes everything (a checkpoint that wrote every dirty agent)."""
        dirty = set(still_dirty)
        keep = set() if written is None else dirty - set(written)
        out: list[Ackable] = []
        for agent in [a for a in self.held if a not in keep]:
            out.extend(self.held.pop(agent))
        self.count -= len(out)
        return out

    @staticmethod
    def release(events: Iterable[Ackable]) -> None:
        for event in events:
            event.ack()
