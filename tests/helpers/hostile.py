"""Shared builders for the hostile-identifier tests (issue #13): poison ids, event bursts, waits.

A *poison* id is one the trace schema used to accept but the breaker scope grammar
(:func:`breakers.scope.validate_id`) refuses: C0 control characters other than tab, newline
and CR (and DEL), the reserved ``/tool:`` separator in an agent id or tool name, ``/`` in a
tenant. Such an event must be refused at decode time (reason ``invalid_id``) on every ingest
path, and never reach the monitor, where it used to crash the worker's evaluation loop.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
import uuid
from typing import Any

import httpx

from helpers.support import WorkerProc, consume_all, wait_for
from streams.contract.schema import TraceEvent

INVALID_ID = "invalid_id"
_ids = itertools.count()

#: (field, value) pairs the scope grammar refuses; ``{run}`` is replaced by a per-test tag so that
#: every test's poison differs (and so its dead letters can be told apart)
POISON: list[tuple[str, str]] = [
    ("agent_id", "bad\x01agent-{run}"),        # SOH
    ("agent_id", "\x1b[31mred-{run}"),          # ESC: terminal escape
    ("agent_id", "del\x7f-{run}"),              # DEL
    ("agent_id", "nul\x00-{run}"),              # NUL
    ("agent_id", "spoof-{run}/tool:shell"),     # reserved separator
    ("tool", "sh\x1bell-{run}"),
    ("tool", "x-{run}/tool:y"),
    ("tool", "bell\x07-{run}"),
    ("tenant", "acme-{run}/evil"),              # '/' in a tenant
    ("tenant", "t\x7f-{run}"),
    ("tenant", "t\x0b-{run}"),                  # vertical tab is not allowed (only \t \n \r)
]

#: ids with characters the grammar allows (tab, newline, CR, quotes, ':' and '/' without '/tool:')
ALLOWED: list[tuple[str, str]] = [
    ("agent_id", "tab\tagent-{run}"),
    ("agent_id", "multi\nline\r-{run}"),
    ("agent_id", "a/b:c-{run}/tool"),
    ("tool", 'say "hi"\n-{run}'),
    ("tool", "tool:x/y-{run}"),
    ("tenant", "t\tenant-{run}"),
]


def poison(run: str) -> list[tuple[str, str]]:
    return [(f, v.replace("{run}", run)) for f, v in POISON]


def allowed(run: str) -> list[tuple[str, str]]:
    return [(f, v.replace("{run}", run)) for f, v in ALLOWED]


def run_tag() -> str:
    return uuid.uuid4().hex[:6]


def now_ms() -> int:
    return int(time.time() * 1000)


def event(agent: str, kind: str = "tool_call", **fields: Any) -> dict[str, Any]:
    """A valid schema-v1 event at wall-clock now (fresh event id)."""
    ev: dict[str, Any] = {"schema_version": "1", "event_id": f"h-{uuid.uuid4().hex[:10]}-{next(_ids)}",
                          "ts": now_ms(), "agent_id": agent, "kind": kind}
    if kind == "tool_call":
        ev.update(tool="shell", status="ok")
    elif kind == "monitor_flag":
        ev.update(tool="shell", severity="high", monitor="guard", action="blocked")
    elif kind == "incident":
        ev.update(tool="shell", severity="critical")
    ev.update(fields)
    return ev


def poisoned(agent: str, field: str, value: str, kind: str = "monitor_flag") -> dict[str, Any]:
    """A high-severity event (flag by default) whose ``field`` carries the poison ``value``."""
    ev = event(agent, kind)
    ev[field] = value
    return ev


def calls(agent: str, n: int, tool: str = "shell") -> list[dict[str, Any]]:
    return [event(agent, "tool_call", tool=tool) for _ in range(n)]


def incidents(agent: str, n: int) -> list[dict[str, Any]]:
    return [event(agent, "incident") for _ in range(n)]


def tripping_burst(agent: str) -> list[dict[str, Any]]:
    """> 2% critical incidents of >= 200 calls in 1h: the default policy opens ``agent:<agent>``."""
    return calls(agent, 220) + incidents(agent, 12)


# ------------------------------------------------------------------ waiting on a worker that may die
def alive_or_fail(w: WorkerProc, doing: str) -> None:
    code = w.proc.poll()  # type: ignore[attr-defined]
    if code is not None:
        lines = w.log_tail(400).splitlines()
        crash = next((ln for ln in lines if "Crashed reason=" in ln), "") or next(
            (ln for ln in reversed(lines) if "Error" in ln), "")
        raise AssertionError(f"the worker exited (code {code}) {doing}: {crash.strip()[:300]}\n"
                             f"--- worker log ---\n{w.log_tail(40)}")


def wait_worker(w: WorkerProc, predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """``wait_for`` that stops at once, with the worker's log, when the worker process exits."""
    proc: Any = w.proc
    value = wait_for(lambda: True if proc.poll() is not None else predicate(), timeout, what)
    alive_or_fail(w, f"while waiting for {what}")
    return value


def metric(w: WorkerProc, name: str, **labels: str) -> float:
    return w.metric(name, **labels)


def authz(w: WorkerProc, agent: str | None = None, tool: str | None = None, tenant: str | None = None,
          headers: list[tuple[str, str]] | None = None, method: str = "GET") -> httpx.Response:
    """Ask ``/v1/authz``; ``headers`` (a list: duplicates kept) replaces the X-* headers built from the args."""
    if headers is None:
        headers = [(k, v) for k, v in (("X-Agent-Id", agent), ("X-Tool", tool), ("X-Tenant", tenant)) if v is not None]
    return httpx.request(method, f"{w.web}/v1/authz", headers=headers, timeout=5)


def dead_letters(bootstrap: str, topic: str, want: int) -> list[Any]:
    """The DLQ records (at least ``want``), read from the beginning."""
    return consume_all(bootstrap, topic, expect=want, timeout=20)


def kill9(w: WorkerProc) -> None:
    """SIGKILL a worker: no final commit, no final checkpoint (its messages are read again)."""
    os.kill(w.proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    w.proc.wait(timeout=10)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ OTLP (otlp_json) requests
def _attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"stringValue": v}} for k, v in d.items()]


def otlp_span(agent: str, op: str = "execute_tool", tool: str | None = "search",
              **attrs: str) -> tuple[str, dict[str, Any]]:
    """(agent, span) of a GenAI span ending now; extra ``attrs`` use ``_`` for ``.`` (tenant_id=...)."""
    end = time.time_ns()
    a: dict[str, str] = {"gen_ai.operation.name": op} if op else {}
    if tool is not None:
        a["gen_ai.tool.name"] = tool
    a.update({k.replace("__", "."): v for k, v in attrs.items()})
    span = {"traceId": uuid.uuid4().hex, "spanId": uuid.uuid4().hex[:16], "name": f"{op} {tool or ''}".strip(),
            "startTimeUnixNano": str(end - 50_000_000), "endTimeUnixNano": str(end), "attributes": _attrs(a)}
    return agent, span


def otlp_request(spans: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One ExportTraceServiceRequest: one resource (service.name = agent) per span."""
    return {"resourceSpans": [{"resource": {"attributes": _attrs({"service.name": agent})},
                               "scopeSpans": [{"scope": {"name": "hostile"}, "spans": [span]}]}
                              for agent, span in spans]}


def otlp_incident(agent: str) -> tuple[str, dict[str, Any]]:
    return otlp_span(agent, op="", tool="shell", tripwire__kind="incident", tripwire__severity="critical")


class Wall:
    """A settable wall clock for an engine under test (``Monitor(clock=EventClock(wall))``)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


_trace_ids = itertools.count()


def trace_event(agent: str, ts: float, kind: str = "tool_call", **fields: Any) -> TraceEvent:
    """A validated event on tool ``shell``: ok calls, critical incidents unless ``fields`` say otherwise."""
    d: dict[str, Any] = {"schema_version": "1", "event_id": f"h-{next(_trace_ids)}", "ts": int(ts * 1000),
                         "agent_id": agent, "kind": kind, "tool": "shell"}
    if kind == "tool_call":
        d["status"] = "ok"
    elif kind == "incident":
        d["severity"] = "critical"
    d.update(fields)
    return TraceEvent.model_validate(d)
