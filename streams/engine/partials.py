"""Cross-agent scope counts shared between workers, one record per trace partition.

Agent and agent×tool scopes live on one partition, so one worker sees all of their
events. Cross-agent scopes (``tool:X``, ``global``, ``tenant:T/global``, ``tenant:T/tool:X``)
draw on every partition. Each worker therefore publishes, every couple of seconds, the
window counts of the budgeted cross-agent scopes for each trace partition it holds. They go
to a compacted topic (key ``<app_id>:<partition>``), and every worker reads the whole topic.
The decider (the holder of partition 0) adds the others' counts to its own: exact up to
one publish interval. After a rebalance the new holder's own counts replace the record of
the moved partition. Nothing is double counted, because a worker never adds the record of
a partition it holds.

>>> r = RemotePartials("tw")
>>> r.apply(encode_partials("tw", 3, {"tool:shell": {3600: {"tool_calls": 5.0}}}), b"tw:3")
{'tool:shell'}
>>> r.window_counts("tool:shell", 3600, exclude={0, 1})
{'tool_calls': 5.0}
>>> r.window_counts("tool:shell", 3600, exclude={3}) is None
True
"""

from __future__ import annotations

import logging
import time
import zlib

import orjson

log = logging.getLogger("tripwire.partials")

#: a record older than this (wall clock) no longer counts: its publisher is gone and nobody took
#: the partition over (publishers re-send unchanged records every ``HEARTBEAT_S``)
MAX_AGE_S = 300.0
HEARTBEAT_S = 60.0

Partials = dict[str, dict[int, dict[str, float]]]


def encode_partials(app_id: str, partition: int, scopes: Partials, wall: float | None = None) -> bytes:
    """A zlib-compressed JSON record of one partition's cross-agent window counts."""
    doc = {"v": 1, "app": app_id, "partition": partition, "wall": time.time() if wall is None else wall,
           "scopes": {s: {str(w): c for w, c in ws.items()} for s, ws in scopes.items()}}
    return zlib.compress(orjson.dumps(doc), 3)


class RemotePartials:
    """The latest partials record of every trace partition, as read from the topic."""

    def __init__(self, app_id: str | None = None) -> None:
        self.app_id = app_id
        self.records: dict[int, tuple[float, Partials]] = {}
        self.unreadable = 0

    def apply(self, value: bytes | None, key: bytes | None = None) -> set[str]:
        """Store one record; return the scopes whose counts it changed."""
        if value is None:
            return set()
        try:
            doc = orjson.loads(zlib.decompress(value))
            if self.app_id is not None and doc.get("app") != self.app_id:
                return set()  # another deployment sharing the topic
            partition = int(doc["partition"])
            scopes: Partials = {s: {int(w): {k: float(v) for k, v in c.items()} for w, c in ws.items()}
                                for s, ws in doc["scopes"].items()}
            wall = float(doc["wall"])
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self.unreadable += 1
            log.warning("ignoring an unreadable scope-partials record (key %r): %s", key, exc)
            return set()
        old = self.records.get(partition, (0.0, {}))[1]
        self.records[partition] = (wall, scopes)
        return {s for s in set(old) | set(scopes) if old.get(s) != scopes.get(s)}

    def window_counts(self, scope: str, window_s: int, exclude: set[int],
                      now_wall: float | None = None) -> dict[str, float] | None:
        """Sum of the other partitions' counts of ``scope`` over ``window_s`` (None: nothing known)."""
        now_wall = time.time() if now_wall is None else now_wall
        total: dict[str, float] | None = None
        for partition, (wall, scopes) in self.records.items():
            if partition in exclude or now_wall - wall > MAX_AGE_S:
                continue
            counts = scopes.get(scope, {}).get(window_s)
            if not counts:
                continue
            if total is None:
                total = dict(counts)
            else:
                for k, v in counts.items():
                    total[k] = total.get(k, 0.0) + v
        return total
