"""The emitter without a reachable broker: packing, signing, validation, never blocking, drop counting."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys

import pytest

from streams.emitter.client import Emitter, InvalidEvent, pack_messages, sign, signature_headers
from streams.ops.procutil import free_port
from helpers.support import REPO, wait_for


def _ev(i: int, agent: str = "a") -> dict:
    return {"schema_version": "1", "event_id": f"e{i}", "ts": 0, "agent_id": agent, "kind": "refusal"}


def test_pack_messages_groups_per_agent_and_bounds_count_and_size() -> None:
    events = [_ev(i, "a" if i % 3 else "b") for i in range(30)]
    msgs = pack_messages(events, max_events=4, max_bytes=10_000)
    assert {k for k, _, _ in msgs} == {b"a", b"b"}
    assert sum(n for _, _, n in msgs) == 30 and max(n for _, _, n in msgs) == 4
    for key, value, n in msgs:
        batch = json.loads(value)
        batch = batch if isinstance(batch, list) else [batch]
        assert len(batch) == n and {e["agent_id"] for e in batch} == {key.decode()}
    # order per agent is kept
    a_ids = [e["event_id"] for k, v, _ in msgs if k == b"a" for e in (json.loads(v) if v[:1] == b"[" else [json.loads(v)])]
    assert a_ids == [e["event_id"] for e in events if e["agent_id"] == "a"]
    # size bound: each message stays under max_bytes unless one event alone is larger
    one = len(json.dumps(_ev(0), separators=(",", ":")))
    small = pack_messages([_ev(i) for i in range(10)], max_events=100, max_bytes=3 * one + 4)
    assert all(len(v) <= 3 * one + 4 for _, v, _ in small) and sum(n for _, _, n in small) == 10
    assert pack_messages([_ev(0)], max_bytes=10)[0][2] == 1


def test_signature_headers_are_hmac_sha256_of_the_value() -> None:
    value = b'[{"a":1},{"b":2}]'
    headers = dict(signature_headers(value, "top-secret", "k7"))
    assert headers["tripwire-key-id"] == b"k7"
    want = hmac.new(b"top-secret", value, hashlib.sha256).hexdigest()
    assert headers["tripwire-signature"] == f"v1={want}".encode()
    assert sign(value, b"top-secret") == f"v1={want}"
    assert signature_headers(value, None, None) == []
    with pytest.raises(ValueError):
        signature_headers(value, "k", None)
    with pytest.raises(ValueError):
        Emitter("127.0.0.1:1", agent_id="a", signing_key="k")


def test_invalid_events_raise_before_buffering() -> None:
    tw = Emitter(f"127.0.0.1:{free_port()}", agent_id="a")
    try:
        with pytest.raises(InvalidEvent, match="needs a 'tool'"):
            tw.emit("tool_call")
        with pytest.raises(InvalidEvent, match="unknown kind"):
            tw.emit("tool_cal", tool="x")
        with pytest.raises(InvalidEvent, match="severity"):
            tw.incident(severity="apocalyptic")
        with pytest.raises(InvalidEvent, match="outcome"):
            tw.task_outcome("maybe")
        with pytest.raises(InvalidEvent, match="no agent_id"):
            Emitter(f"127.0.0.1:{free_port()}").refusal()
        assert tw.buffered == 0
        # fields: defaults, None left out, extras into attributes (accepted), explicit ids kept
        assert tw.tool_call("search", latency_ms=None, region="eu", event_id="mine") == "mine"
    finally:
        tw.close(timeout=0.5)


def test_emit_never_blocks_and_counts_drops_when_the_broker_is_unreachable() -> None:
    tw = Emitter(f"127.0.0.1:{free_port()}", agent_id="a", buffer_max=50, batch_max=10, linger_s=0.01)
    ids = [tw.tool_call("search", latency_ms=1.0) for _ in range(200)]
    # all 200 calls returned while the sender was still trying to reach the broker (kafka-python
    # gives up bootstrapping after 2 s): emit() does not wait for Kafka
    assert tw.stats()["last_error"] is None
    assert sum(i is not None for i in ids) == 50      # the buffer keeps the first 50...
    assert tw.dropped == 150                            # ...and counts every event it had to drop
    wait_for(lambda: tw.stats()["last_error"], 15, "the sender to report the unreachable broker")
    assert tw.sent == 0 and tw.buffered == 50
    assert tw.flush(timeout=0.3) is False
    assert tw.close(timeout=0.5) is False
    assert tw.dropped == 200 and tw.buffered == 0       # what never left is counted as dropped at close
    assert tw.tool_call("late") is None and tw.dropped == 201   # emitting after close never raises


def test_timed_tool_call_records_latency_and_errors() -> None:
    tw = Emitter(f"127.0.0.1:{free_port()}", agent_id="a")
    try:
        with tw.timed_tool_call("ok-tool") as extra:
            extra["tool_call_id"] = "c1"
        with pytest.raises(KeyError):
            with tw.timed_tool_call("bad-tool"):
                raise KeyError("boom")
        events = list(tw._buf)
        assert [(e["tool"], e["status"]) for e in events] == [("ok-tool", "ok"), ("bad-tool", "error")]
        assert events[0]["tool_call_id"] == "c1" and events[1]["error_type"] == "KeyError"
        assert all(e["latency_ms"] >= 0 for e in events)
    finally:
        tw.close(timeout=0.5)


def test_importable_without_faust() -> None:
    code = ("import sys; import streams.emitter.client; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('faust', 'mode', 'aiokafka')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_signatures_verify_with_the_workers_signature_policy() -> None:
    """What the emitter signs, the worker's verifier accepts; the OTLP/HTTP re-publisher never signs (#15)."""
    signing = pytest.importorskip("streams.contract.signing", reason="the worker's signature verifier is not present")
    from streams.worker.otlp_bridge import trace_messages
    from streams.settings import Settings

    policy = signing.SignaturePolicy({"k1": b"emitter-key"}, ["agent:*"])
    value = b'[{"agent_id":"a"}]'
    assert policy.check_message(b"a", value, signature_headers(value, "emitter-key", "k1")) == (True, None)
    assert policy.check_message(b"a", value, signature_headers(value, "wrong-key", "k1"))[0] is False

    settings = Settings(signing_keys={"k1": "worker-key", "k0": "older-key"})
    worker_policy = signing.SignaturePolicy.from_settings(settings.signing_keys, ["*"])
    for m in trace_messages([_ev(1), _ev(2, "b")], settings):  # unsigned: refused where a signature is required
        assert m.headers == {}
        assert worker_policy.check_message(m.key, m.value, list(m.headers.items()))[0] is False
