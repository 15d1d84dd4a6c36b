"""Commit a Kafka offset only once the state it produced is checkpointed.

Detector state lives in memory and reaches its changelog every ``checkpoint_interval_s``.
If offsets were committed as soon as a message was processed, a crash between the commit
and the next checkpoint would lose those events for good: committed, so never re-read;
not checkpointed, so not restored. The trace reader therefore parks each message's offset
here under its agent (the message key); a checkpoint releases the agents it wrote, after the
producer flushed them, and the commit then goes no further than the first offset still held
on each partition (:meth:`AckGate.floor`). After a crash the messages past the commit are
read again and the restored dedupe memory (checkpointed in the same step) drops the ones
already counted: no event lost, none counted twice.

Only the *first* held offset of each (agent, partition) matters for the commit: offsets grow
within a partition, so a message held after it can never lower the floor.

>>> gate = AckGate()
>>> gate.hold("agent-a", 0, 10); gate.hold("agent-b", 0, 11); gate.hold("agent-a", 0, 12)
>>> gate.floor()
{0: 10}
>>> gate.take(written={"agent-a"}, still_dirty={"agent-b"})
1
>>> gate.floor()
{0: 11}
"""

from __future__ import annotations

from collections.abc import Iterable


class AckGate:
    """Offsets held back from the commit: per agent, the first held offset of each partition."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: dict[str, dict[int, int]] = {}

    def hold(self, agent: str, partition: int, offset: int) -> None:
        """Hold ``offset`` of ``partition`` until ``agent``'s state is checkpointed."""
        parts = self.held.get(agent)
        if parts is None:
            self.held[agent] = {partition: offset}
        elif partition not in parts:
            parts[partition] = offset

    def take(self, written: Iterable[str] | None = None, still_dirty: Iterable[str] = ()) -> int:
        """Release what is now safe; return how many agents were released.

        Safe: agents just ``written``, and agents with nothing to write (``not in still_dirty``:
        their messages changed no state, e.g. duplicates or rejects). ``written=None`` releases
        everything (a checkpoint that wrote every dirty agent).
        """
        if written is None:
            n = len(self.held)
            self.held.clear()
            return n
        keep = set(still_dirty) - set(written)
        gone = [a for a in self.held if a not in keep]
        for agent in gone:
            del self.held[agent]
        return len(gone)

    def floor(self) -> dict[int, int]:
        """Per partition, the first offset still held (the commit must stay at or below it)."""
        out: dict[int, int] = {}
        for parts in self.held.values():
            for partition, offset in parts.items():
                low = out.get(partition)
                if low is None or offset < low:
                    out[partition] = offset
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is held on ``partitions``: their log was lost and is read again from offset 0, so offsets of
        the old log say nothing of the new one (an agent keeps only its first held offset per partition, which
        would hide its new, lower ones)."""
        gone = set(partitions)
        for agent in list(self.held):
            parts = self.held[agent]
            for partition in gone & parts.keys():
                del parts[partition]
            if not parts:
                del self.held[agent]
