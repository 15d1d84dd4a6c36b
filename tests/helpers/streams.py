"""Shared builders for the streams unit tests (no broker)."""

from __future__ import annotations

import itertools
import os
from typing import Any

import orjson
import pytest

from streams.contract.decode import REJECT_REASONS, Reject
from streams.contract.schema import TraceEvent

AGENT = "agent-1"
KEY = AGENT.encode()
#: DESIGN.md default for max_message_bytes
DEFAULT_MAX_BYTES = 256 * 1024
#: a fixed, past event time (2026-11-01T00:00:00Z) in epoch ms
TS_MS = 1_793_491_200_000

_ids = itertools.count()

#: the fields each kind needs beyond the five required ones
KIND_EXTRAS: dict[str, dict[str, Any]] = {
    "tool_call": {"tool": "search"},
    "llm_call": {"model": "m", "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01, "latency_ms": 120},
    "monitor_flag": {"tool": "search", "severity": "high", "monitor": "guard", "action": "blocked"},
    "incident": {"severity": "critical"},
    "refusal": {"should_refuse": True},
    "escalation": {},
    "task_outcome": {"outcome": "success", "task_id": "t1", "attempt": 1, "intervened": False},
}

DROP = object()


@pytest.fixture(autouse=True)
def no_tripwire_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() must see defaults only (no TRIPWIRE_* variable of the environment running the tests).

    Autouse in every module that imports it.
    """
    for name in list(os.environ):
        if name.startswith("TRIPWIRE_"):
            monkeypatch.delenv(name)


def event(kind: str = "tool_call", **fields: Any) -> dict[str, Any]:
    """A valid event dict of ``kind`` with a fresh event_id; ``field=DROP`` removes a field.

    An unknown ``kind`` (or ``DROP``) gets the other fields of a ``tool_call``.
    """
    ev: dict[str, Any] = {
        "schema_version": "1",
        "event_id": f"ev-{next(_ids)}",
        "ts": TS_MS,
        "agent_id": AGENT,
        "kind": kind,
        **KIND_EXTRAS.get(kind, KIND_EXTRAS["tool_call"]),  # type: ignore[call-overload]
    }
    if kind is DROP:
        del ev["kind"]
    for name, value in fields.items():
        if value is DROP:
            ev.pop(name, None)
        else:
            ev[name] = value
    return ev


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def sandwich(bad: Any) -> tuple[bytes, list[str]]:
    """A batch ``[good, bad, good]`` (bad given as a dict or as raw JSON bytes) and the good ids."""
    g1, g2 = event("tool_call"), event("llm_call")
    middle = bad if isinstance(bad, bytes) else orjson.dumps(bad)
    return b"[" + orjson.dumps(g1) + b"," + middle + b"," + orjson.dumps(g2) + b"]", [g1["event_id"], g2["event_id"]]


def check_outcome(events: list[Any], rejects: list[Any]) -> None:
    """Every outcome is an accepted TraceEvent or a Reject with a known reason."""
    for ev in events:
        assert isinstance(ev, TraceEvent)
    for rj in rejects:
        assert isinstance(rj, Reject)
        assert rj.reason in REJECT_REASONS, rj
        assert isinstance(rj.detail, str)
