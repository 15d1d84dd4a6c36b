"""Emit schema-v1 trace events from an agent or a tool gateway, straight to Kafka.

Importable without faust: it needs only kafka-python, orjson and pydantic (for
the cheap client-side check against :class:`streams.contract.schema.TraceEvent`).

::

    from streams.emitter.client import Emitter

    tw = Emitter("kafka-1:9092", agent_id="billing-agent")
    tw.tool_call("refund", latency_ms=182.5, tool_call_id="call_7")
    tw.monitor_flag("pii-filter", action="blocked", severity="high", tool="send_email")
    tw.close()

Design:

* ``emit()`` never blocks the agent: it validates the event, appends it to a
  bounded in-memory buffer and returns. A background thread batches the buffer
  per agent into JSON-array messages (key = ``agent_id``) and sends them.
* When the buffer is full (broker down or slow), *new* events are dropped and
  counted in :attr:`Emitter.dropped`; the agent keeps running.
* Messages are optionally HMAC-signed (DESIGN.md): header
  ``tripwire-signature: v1=<hex HMAC-SHA256 of the message value>`` and
  ``tripwire-key-id: <id>``.
* :meth:`Emitter.flush` waits until everything buffered is acknowledged;
  :meth:`Emitter.close` flushes and stops; both also run at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from pydantic import ValidationError

from streams.kafka.security import KafkaSecurity
from streams.contract.schema import KINDS, TraceEvent
from streams.contract.signing import (HTTP_KEY_ID_HEADER, HTTP_SIGNATURE_HEADER, KEY_ID_HEADER, SIGNATURE_HEADER,
                                      sign_value)

log = logging.getLogger("tripwire.emitter")

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024


class InvalidEvent(ValueError):
    """The event would be rejected by tripwire (caught client-side, never sent)."""


# ------------------------------------------------------------------ signing and packing
def sign(value: bytes, key: bytes | str) -> str:
    """The ``tripwire-signature`` header value of a message value.

    >>> sign(b'{"a":1}', "k3y")
    'v1=32db719f172c48e89dbfa56ed20d9e19cdbfdbe9f652ccdf5fa03494d2444853'
    """
    return sign_value(value, key.encode("utf-8") if isinstance(key, str) else key)


def signature_headers(value: bytes, key: bytes | str | None, key_id: str | None) -> list[tuple[str, bytes]]:
    """Kafka headers that sign ``value`` (empty when no key is configured)."""
    if key is None:
        return []
    if not key_id:
        raise ValueError("a signing key needs a key id (the tripwire-key-id header)")
    return [(SIGNATURE_HEADER, sign(value, key).encode()), (KEY_ID_HEADER, key_id.encode())]


def http_signature_headers(body: bytes, key: bytes | str, key_id: str) -> dict[str, str]:
    """HTTP headers that sign a ``POST /v1/traces`` body end to end (one agent's events, ``application/json``).

    The worker forwards such a body verbatim as one Kafka message with the Kafka signature headers.

    >>> sorted(http_signature_headers(b'[]', "k3y", "k1"))
    ['X-Tripwire-Key-Id', 'X-Tripwire-Signature']
    """
    if not key_id:
        raise ValueError("a signing key needs a key id (the X-Tripwire-Key-Id header)")
    return {HTTP_SIGNATURE_HEADER: sign(body, key), HTTP_KEY_ID_HEADER: key_id}


def pack_messages(
    events: Iterable[dict[str, Any]],
    *,
    max_events: int = 100,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> list[tuple[bytes, bytes, int]]:
    """Group events per ``agent_id`` into Kafka messages: ``(key, value, n_events)``.

    A message holds one event object or a JSON array of up to ``max_events`` events
    of one agent and stays under ``max_bytes`` (a single larger event still goes
    alone; the worker dead-letters it as ``too_large``). Order per agent is kept.

    >>> msgs = pack_messages([{"agent_id": "a", "n": 1}, {"agent_id": "b", "n": 2}, {"agent_id": "a", "n": 3}])
    >>> [(k, v, n) for k, v, n in msgs]
    [(b'a', b'[{"agent_id":"a","n":1},{"agent_id":"a","n":3}]', 2), (b'b', b'{"agent_id":"b","n":2}', 1)]
    """
    by_agent: dict[str, list[bytes]] = {}
    for ev in events:
        by_agent.setdefault(str(ev.get("agent_id", "")), []).append(orjson.dumps(ev))
    out: list[tuple[bytes, bytes, int]] = []
    for agent, encoded in by_agent.items():
        key = agent.encode("utf-8")
        chunk: list[bytes] = []
        size = 2
        for item in encoded:
            if chunk and (len(chunk) >= max_events or size + len(item) + 1 > max_bytes):
                out.append((key, _value(chunk), len(chunk)))
                chunk, size = [], 2
            chunk.append(item)
            size += len(item) + 1
        if chunk:
            out.append((key, _value(chunk), len(chunk)))
    return out


def _value(chunk: list[bytes]) -> bytes:
    return chunk[0] if len(chunk) == 1 else b"[" + b",".join(chunk) + b"]"


def new_event_id() -> str:
    """A random, unique event id (32 hex characters)."""
    return uuid.uuid4().hex


# ------------------------------------------------------------------ the client
class Emitter:
    """A buffered, batching, never-blocking producer of trace events.

    ``agent_id`` is the default for every event (a gateway emitting for many
    agents passes ``agent_id=`` per call); ``tenant`` likewise. Thread-safe.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = "agent-traces",
        agent_id: str | None = None,
        signing_key: bytes | str | None = None,
        key_id: str | None = None,
        batch_max: int = 100,
        linger_s: float = 0.2,
        buffer_max: int = 10_000,
        *,
        tenant: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        validate: bool = True,
        exit_timeout_s: float = 5.0,
        producer_config: dict[str, Any] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        if batch_max < 1 or buffer_max < 1:
            raise ValueError("batch_max and buffer_max must be >= 1")
        if linger_s < 0:
            raise ValueError("linger_s must be >= 0")
        if signing_key is not None and not key_id:
            raise ValueError("signing_key needs key_id (sent as the tripwire-key-id header)")
        self.bootstrap = bootstrap
        self.topic = topic
        self.agent_id = agent_id
        self.tenant = tenant
        self.batch_max = batch_max
        self.linger_s = linger_s
        self.buffer_max = buffer_max
        self.max_message_bytes = max_message_bytes
        self.validate = validate
        self.exit_timeout_s = exit_timeout_s
        self._key = signing_key
        self._key_id = key_id
        self.security = security or KafkaSecurity()
        self.security.ssl_context  # noqa: B018 - a bad CA/certificate fails here, not in the sender thread
        self._producer_config = dict(producer_config or {})
        #: events dropped: buffer full, or still buffered when close() gave up
        self.dropped = 0
        #: events the broker acknowledged
        self.sent = 0
        #: events handed to Kafka whose delivery failed
        self.failed = 0
        #: the last connection or delivery error (text), None when healthy
        self.last_error: str | None = None
        self._buf: deque[dict[str, Any]] = deque()
        self._oldest = 0.0
        self._inflight = 0
        self._flushing = 0
        self._closing = False
        self._closed = False
        self._cond = threading.Condition()
        self._producer: Any = None
        self._thread = threading.Thread(target=self._run, name="tripwire-emitter", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    # -------------------------------------------------------------- emitting
    def emit(self, kind: str, **fields: Any) -> str | None:
        """Buffer one event of ``kind``; return its ``event_id``, or None if it was dropped.

        ``schema_version``, ``event_id`` (random), ``ts`` (now, epoch ms), ``agent_id``
        and ``tenant`` (the emitter's defaults) are filled in unless given; None values
        are left out. Raises :class:`InvalidEvent` when tripwire would reject the event.
        """
        if self._closing:  # emitting after close() must not break the agent either
            with self._cond:
                self.dropped += 1
            return None
        ev: dict[str, Any] = {"schema_version": "1", "event_id": fields.pop("event_id", None) or new_event_id(),
                              "ts": fields.pop("ts", None) or int(time.time() * 1000),
                              "agent_id": fields.pop("agent_id", None) or self.agent_id, "kind": kind}
        if self.tenant is not None:
            ev["tenant"] = self.tenant
        ev.update((k, v) for k, v in fields.items() if v is not None)
        if ev["agent_id"] is None:
            raise InvalidEvent("no agent_id: pass agent_id= to Emitter() or to this call")
        if self.validate:
            check(ev)
        with self._cond:
            if len(self._buf) >= self.buffer_max:
                self.dropped += 1
                return None
            if not self._buf:
                self._oldest = time.monotonic()
            self._buf.append(ev)
            if len(self._buf) == 1 or len(self._buf) >= self.batch_max:
                self._cond.notify_all()
        return ev["event_id"]

    def tool_call(self, tool: str, status: str = "ok", latency_ms: float | None = None, **fields: Any) -> str | None:
        """The agent used ``tool`` (the denominator of near-miss rates)."""
        return self.emit("tool_call", tool=tool, status=status, latency_ms=latency_ms, **fields)

    def llm_call(self, model: str | None = None, *, input_tokens: float | None = None,
                 output_tokens: float | None = None, latency_ms: float | None = None, cost_usd: float | None = None,
                 status: str = "ok", **fields: Any) -> str | None:
        """A model call (tokens, cost, latency)."""
        return self.emit("llm_call", model=model, input_tokens=input_tokens, output_tokens=output_tokens,
                         latency_ms=latency_ms, cost_usd=cost_usd, status=status, **fields)

    def monitor_flag(self, monitor: str, action: str | None = "blocked", severity: str | None = None,
                     **fields: Any) -> str | None:
        """A monitor, guardrail or human caught a flawed action before harm (a near-miss)."""
        return self.emit("monitor_flag", monitor=monitor, action=action, severity=severity, **fields)

    def incident(self, severity: str = "high", **fields: Any) -> str | None:
        """A consequential error: harm past the owner's materiality threshold."""
        return self.emit("incident", severity=severity, **fields)

    def refusal(self, **fields: Any) -> str | None:
        """The agent refused (``should_refuse`` = ground truth on red-team inserts)."""
        return self.emit("refusal", **fields)

    def escalation(self, **fields: Any) -> str | None:
        """The agent asked a human for help."""
        return self.emit("escalation", **fields)

    def task_outcome(self, outcome: str, task_id: str | None = None, attempt: int | None = None,
                     intervened: bool | None = None, **fields: Any) -> str | None:
        """A task ended: ``outcome`` success | failure."""
        return self.emit("task_outcome", outcome=outcome, task_id=task_id, attempt=attempt,
                         intervened=intervened, **fields)

    @contextmanager
    def timed_tool_call(self, tool: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """Time a tool call; emits ``tool_call`` with ``latency_ms`` and status ``error`` on an exception.

        The yielded dict may be updated with more fields (e.g. ``tool_call_id``).
        """
        extra: dict[str, Any] = dict(fields)
        started = time.perf_counter()
        try:
            yield extra
        except BaseException as exc:
            extra.setdefault("error_type", type(exc).__name__)
            self.tool_call(tool, status="error", latency_ms=(time.perf_counter() - started) * 1000, **extra)
            raise
        self.tool_call(tool, latency_ms=(time.perf_counter() - started) * 1000, **extra)

    # -------------------------------------------------------------- state
    @property
    def buffered(self) -> int:
        """Events waiting in the buffer (not yet handed to Kafka)."""
        return len(self._buf)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"buffered": len(self._buf), "in_flight": self._inflight, "sent": self.sent,
                    "dropped": self.dropped, "failed": self.failed, "last_error": self.last_error}

    def flush(self, timeout: float = 10.0) -> bool:
        """Send everything buffered and wait for the broker's acks; True when all were delivered in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._buf or self._inflight:
                    left = deadline - time.monotonic()
                    if left <= 0 or (self._closed and not self._thread.is_alive()):
                        return False
                    self._cond.wait(min(left, 0.5))
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 10.0) -> bool:
        """Flush (up to ``timeout``), stop the sender and close the producer; idempotent.

        Events still buffered when the time is up are counted in :attr:`dropped`.
        Returns True when everything emitted was delivered.
        """
        if self._closed:
            return not self._buf and not self._inflight
        started = time.monotonic()
        delivered = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.1, timeout - (time.monotonic() - started)))
        with self._cond:
            self._closed = True
            leftover = len(self._buf)
            self._buf.clear()
            self.dropped += leftover
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=max(0.5, timeout - (time.monotonic() - started)))
            except Exception as exc:  # noqa: BLE001 - closing must not raise into the agent
                log.warning("tripwire emitter: producer close failed: %s", exc)
        atexit.unregister(self._at_exit)
        return delivered and leftover == 0

    def __enter__(self) -> "Emitter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _at_exit(self) -> None:
        self.close(self.exit_timeout_s)

    # -------------------------------------------------------------- sender thread
    def _run(self) -> None:
        backoff = 0.1
        while True:
            with self._cond:
                if not self._wait_due():
                    return
            if self._producer is None:
                if not self._connect():
                    with self._cond:
                        if not self._closing:
                            self._cond.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
            with self._cond:
                n = min(len(self._buf), self.batch_max * 10)
                batch = [self._buf.popleft() for _ in range(n)]
                self._oldest = time.monotonic()
                self._inflight += n
            if batch:
                self._send(batch)

    def _wait_due(self) -> bool:
        """Under the lock: wait until a batch is due (True) or the emitter stops (False)."""
        while True:
            if self._closing and (not self._buf or self._producer is None):
                return False
            if self._buf:
                if (len(self._buf) >= self.batch_max or self._flushing or self._closing
                        or time.monotonic() - self._oldest >= self.linger_s):
                    return True
                self._cond.wait(max(0.001, self.linger_s - (time.monotonic() - self._oldest)))
            else:
                self._cond.wait()

    def _connect(self) -> bool:
        from kafka import KafkaProducer

        config: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "client_id": "tripwire-emitter",
                                  "acks": 1, "linger_ms": 5, "retries": 5, "max_block_ms": 10_000,
                                  "request_timeout_ms": 10_000, "bootstrap_timeout_ms": 2000}
        config.update(self.security.kafka_python_kwargs())
        config.update(self._producer_config)
        try:
            self._producer = KafkaProducer(**config)
        except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable, DNS errors, bad config...
            with self._cond:
                self.last_error = f"cannot connect to {self.bootstrap}: {exc}"[:300]
            log.debug("tripwire emitter: %s", self.last_error)
            return False
        with self._cond:
            closed = self._closed
        if closed:  # close() gave up on us while we were connecting
            self._producer.close(timeout=1)
            self._producer = None
            return False
        # kafka-python closes its producer at exit; flush our buffer before that (atexit is LIFO)
        atexit.unregister(self._at_exit)
        atexit.register(self._at_exit)
        with self._cond:
            self.last_error = None
        return True

    def _send(self, batch: list[dict[str, Any]]) -> None:
        for key, value, n in pack_messages(batch, max_events=self.batch_max, max_bytes=self.max_message_bytes):
            headers = signature_headers(value, self._key, self._key_id)
            try:
                future = self._producer.send(self.topic, key=key, value=value, headers=headers)
            except Exception as exc:  # noqa: BLE001 - metadata timeout, producer closed
                self._done(n, exc)
                continue
            future.add_callback(lambda _md, n=n: self._done(n, None))
            future.add_errback(lambda exc, n=n: self._done(n, exc))

    def _done(self, n: int, exc: BaseException | None) -> None:
        with self._cond:
            self._inflight -= n
            if exc is None:
                self.sent += n
            else:
                self.failed += n
                self.last_error = f"delivery failed: {exc}"[:300]
            self._cond.notify_all()
        if exc is not None:
            log.warning("tripwire emitter: %d events not delivered: %s", n, exc)


def check(event: dict[str, Any]) -> None:
    """Raise :class:`InvalidEvent` when tripwire's worker would reject ``event``.

    >>> check({"schema_version": "1", "event_id": "e", "ts": 0, "agent_id": "a", "kind": "tool_call"})
    Traceback (most recent call last):
    ...
    streams.emitter.client.InvalidEvent: invalid tool_call event: a tool_call event needs a 'tool'
    """
    if event.get("kind") not in KINDS:
        raise InvalidEvent(f"unknown kind {str(event.get('kind'))[:40]!r}; one of {', '.join(KINDS)}")
    try:
        TraceEvent.model_validate(event)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise InvalidEvent(f"invalid {event.get('kind')} event: {loc + ': ' if loc else ''}{msg}") from None
