"""Shared builders for the fault-tolerance tests: event bursts, authz polling, kill -9."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import httpx


def now_ms() -> int:
    return int(time.time() * 1000)


def event(agent: str, event_id: str, kind: str = "tool_call", **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"schema_version": "1", "event_id": event_id, "ts": now_ms(), "agent_id": agent, "kind": kind}
    if kind == "tool_call":
        ev.update(tool="shell", status="ok")
    ev.update(fields)
    return ev


def calls(agent: str, n: int, tag: str = "c") -> list[dict[str, Any]]:
    return [event(agent, f"{agent}-{tag}{i}") for i in range(n)]


def flags(agent: str, n: int, tag: str = "f") -> list[dict[str, Any]]:
    return [event(agent, f"{agent}-{tag}{i}", "monitor_flag", tool="shell", severity="high", monitor="guard",
                  action="blocked") for i in range(n)]


def incidents(agent: str, n: int, tag: str = "i") -> list[dict[str, Any]]:
    return [event(agent, f"{agent}-{tag}{i}", "incident", tool="shell", severity="critical") for i in range(n)]


def tripping_burst(agent: str) -> list[dict[str, Any]]:
    """> 2% critical incidents of >= 200 calls in 1h: the default policy opens ``agent:<agent>``."""
    return calls(agent, 220) + incidents(agent, 12)


def authz_status(web: str, agent: str, tool: str = "shell", client: httpx.Client | None = None) -> int:
    get = client.get if client is not None else httpx.get
    return get(f"{web}/v1/authz", headers={"X-Agent-Id": agent, "X-Tool": tool}, timeout=2).status_code


def kill9(proc: Any) -> None:
    """SIGKILL a worker: no shutdown hook, no final commit, no final checkpoint."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


class AuthzPoller(threading.Thread):
    """Ask ``/v1/authz`` for every (agent, tool) every ``interval_s``; remember any answer that allowed."""

    def __init__(self, web: str, pairs: list[tuple[str, str]], interval_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.web, self.pairs, self.interval_s = web, pairs, interval_s
        self.allowed: list[tuple[float, str, str]] = []
        self.polls = 0
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._halt.is_set():
                for agent, tool in self.pairs:
                    try:
                        if authz_status(self.web, agent, tool, client) == 200:
                            self.allowed.append((time.time(), agent, tool))
                        self.polls += 1
                    except httpx.HTTPError:
                        self.errors += 1
                self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def changelog_records(bootstrap: str, changelog: str, timeout: float = 15.0) -> list[tuple[bytes, bytes | None]]:
    """Every (key, value) of a changelog topic, oldest first, read up to the end offsets taken at the start."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=500)
    try:
        tps = [TopicPartition(changelog, p) for p in consumer.partitions_for_topic(changelog) or set()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[tuple[bytes, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for recs in consumer.poll(timeout_ms=300).values():
                out.extend((rec.key, rec.value) for rec in recs)
        return out
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The committed offset per partition of ``topic`` for consumer ``group``, as the broker reports it."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {tp.partition: meta.offset for tp, meta in admin.list_group_offsets(group)[group].items()
                if tp.topic == topic and meta.offset >= 0}
    finally:
        admin.close()
