"""Issue #15 (items 2, 4, 8) without a broker: attacks on attestation, key bindings, replay, ts_future, drills.

Each test plays a hostile producer against the worker's own per-message path
(:class:`streams.engine.pipeline.TracePipeline`) or the HTTP ingest logic
(:class:`streams.worker.http.ingest.TraceIngest`), with real HMAC signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

import orjson
import pytest

from breakers.operators import OperatorRegistry, hash_token
from streams.contract.signing import KEY_ID_HEADER, SIGNATURE_HEADER, SignaturePolicy
from streams.engine.pipeline import TracePipeline
from streams.settings import Settings
from streams.worker.http.ingest import TraceIngest
from streams.worker.otlp_bridge import Outgoing
from helpers.streams import no_tripwire_env  # noqa: F401  (autouse)
from helpers.streams import event

SECRETS = {"k-pay": "pay-secret", "k-any": "any-secret", "k-drill": "drill-secret"}
TOKEN = "ingest-token-0123456789"


def sig(value: bytes, key_id: str) -> list[tuple[str, bytes]]:
    mac = "v1=" + hmac.new(SECRETS[key_id].encode(), value, hashlib.sha256).hexdigest()
    return [(SIGNATURE_HEADER, mac.encode()), (KEY_ID_HEADER, key_id.encode())]


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, bool]] = []

    def __call__(self, partition: int, events: list[Any], attested: bool) -> None:
        self.got += [(e.event_id, attested) for e in events]

    @property
    def ids(self) -> list[str]:
        return [i for i, _ in self.got]


def pipeline(**settings: Any) -> tuple[TracePipeline, Sink]:
    sink = Sink()
    base: dict[str, Any] = {"signing_keys": SECRETS}
    base.update(settings)
    return TracePipeline(Settings(**base), sink=sink), sink


def send(pipe: TracePipeline, agent: str, events: list[dict], key_id: str | None = None, *, partition: int = 0,
         offset: int = 0, now: float | None = None) -> list[str]:
    """Process one message; the dead letters' reasons."""
    value = orjson.dumps(events)
    dead = pipe.process(agent.encode(), value, topic="agent-traces", partition=partition, offset=offset,
                        headers=sig(value, key_id) if key_id else None, now=now)
    return [d.reason for d in dead]


def at(ts_s: float, agent: str, **fields: Any) -> dict:
    return event(agent_id=agent, ts=int(ts_s * 1000), **fields)


# ---------------------------------------------------------------- attestation reaches the monitor

def test_only_a_validly_signed_message_is_attested() -> None:
    pipe, sink = pipeline()
    now = time.time()
    signed, unsigned, forged = at(now, "bot"), at(now, "bot"), at(now, "bot")
    assert send(pipe, "bot", [signed], "k-any") == []
    assert send(pipe, "bot", [unsigned]) == []
    value = orjson.dumps([forged])
    dead = pipe.process(b"bot", value, topic="t", partition=0, offset=2,
                        headers=[(SIGNATURE_HEADER, b"v1=" + b"0" * 64), (KEY_ID_HEADER, b"k-any")])
    assert [d.reason for d in dead] == ["bad_signature"]
    assert sink.got == [(signed["event_id"], True), (unsigned["event_id"], False)]


# ---------------------------------------------------------------- key bindings

def test_a_key_bound_to_one_agent_cannot_sign_for_another() -> None:
    """Attack: a producer holding k-pay (bound to pay-*) signs traffic for support-bot."""
    pipe, sink = pipeline(signing_key_scopes={"k-pay": ["agent:pay-*"]}, require_signature=["agent:support-*"])
    now = time.time()
    forged = at(now, "support-bot")
    assert send(pipe, "support-bot", [forged], "k-pay") == ["bad_signature"]
    own = at(now, "pay-1")
    assert send(pipe, "pay-1", [own], "k-pay", offset=1) == []
    assert sink.got == [(own["event_id"], True)]
    # the unbound key k-any is bound to everything (no entry)
    other = at(now, "support-bot")
    assert send(pipe, "support-bot", [other], "k-any", offset=2) == []


def test_a_tenant_bound_key_does_not_cover_tenant_spoofing_or_tenantless_events() -> None:
    pipe, sink = pipeline(signing_key_scopes={"k-pay": ["tenant:acme"]})
    now = time.time()
    ok, other, none = at(now, "bot", tenant="acme"), at(now, "bot", tenant="globex"), at(now, "bot")
    assert send(pipe, "bot", [ok, other, none], "k-pay") == ["bad_signature", "bad_signature"]
    assert sink.got == [(ok["event_id"], True)]


def test_binding_errors_are_configuration_errors() -> None:
    with pytest.raises(ValueError, match="not in signing_keys"):
        Settings(signing_keys=SECRETS, signing_key_scopes={"k-typo": ["agent:x"]})
    with pytest.raises(ValueError, match="signing_key_scopes entry"):
        Settings(signing_keys=SECRETS, signing_key_scopes={"k-pay": ["agnt:x"]})
    with pytest.raises(ValueError, match="drill_key_id"):
        Settings(signing_keys=SECRETS, drill_key_id="nope")
    with pytest.raises(ValueError, match="dedupe_horizon_s"):
        Settings(signing_keys=SECRETS, signature_max_age_s=7200)


# ---------------------------------------------------------------- tenant rules fail closed

def test_omitting_tenant_does_not_dodge_a_tenant_requirement() -> None:
    """Attack: require_signature ["tenant:acme"]; the forger simply leaves ``tenant`` out."""
    pipe, sink = pipeline(require_signature=["tenant:acme"])
    now = time.time()
    tenantless, acme, globex = at(now, "bot"), at(now, "bot", tenant="acme"), at(now, "bot", tenant="globex")
    assert send(pipe, "bot", [tenantless, acme, globex]) == ["bad_signature", "bad_signature"]
    assert sink.ids == [globex["event_id"]]


# ---------------------------------------------------------------- replay

def test_a_replay_after_the_dedupe_memory_evicted_it_is_refused() -> None:
    """Attack: capture a signed message, flood the dedupe memory, replay it later."""
    pipe, sink = pipeline(dedupe_max_ids=1000, signature_max_age_s=900)
    t0 = time.time() - 3000
    captured = [at(t0, "pay-1")]
    assert send(pipe, "pay-1", captured, "k-any", now=t0) == []
    # the producer's own signed traffic goes on for 20 minutes, 1500 fresh ids: the captured id is evicted
    for i in range(15):
        batch = [at(t0 + 80 * (i + 1), "pay-1") for _ in range(100)]
        assert send(pipe, "pay-1", batch, "k-any", offset=i + 1, now=t0 + 80 * (i + 1)) == []
    counted = len(sink.ids)
    assert send(pipe, "pay-1", captured, "k-any", offset=99, now=t0 + 1300) == ["replayed"]
    assert len(sink.ids) == counted
    assert pipe.counters.rejected["replayed"] == 1


def test_inside_the_window_dedupe_catches_a_replay_and_a_catching_up_worker_refuses_nothing() -> None:
    pipe, sink = pipeline()
    t0 = time.time() - 10_000  # a backlog read long after it was written: the window follows the stream
    msgs = [[at(t0 + 60 * i, "pay-1")] for i in range(30)]
    for i, m in enumerate(msgs):
        assert send(pipe, "pay-1", m, "k-any", offset=i) == []
    assert send(pipe, "pay-1", msgs[-2], "k-any", offset=40) == []  # inside the window: a duplicate
    assert pipe.counters.duplicates == 1 and len(sink.ids) == 30
    assert send(pipe, "pay-1", msgs[0], "k-any", offset=41) == ["replayed"]  # 29 min old: outside
    # unsigned traffic neither moves the window nor is subject to it
    assert send(pipe, "pay-1", [at(t0, "pay-1")], offset=42) == []


def test_the_signed_watermark_survives_a_restart() -> None:
    pipe, _ = pipeline()
    t0 = time.time() - 5000
    old = [at(t0, "pay-1")]
    send(pipe, "pay-1", old, "k-any")
    send(pipe, "pay-1", [at(t0 + 2000, "pay-1")], "k-any", offset=1)
    chunks = [v for _, _, v in pipe.checkpoint_dedupe()]
    fresh, sink = pipeline(dedupe_max_ids=1000)
    fresh.restore_dedupe(0, chunks)
    fresh.recent_ids(0).load_state([])  # even with the dedupe memory lost, the window holds
    assert fresh.signed_watermark(0) == pytest.approx(t0 + 2000, abs=0.01)
    assert send(fresh, "pay-1", old, "k-any", offset=2) == ["replayed"]
    assert sink.ids == []


def test_an_unsaved_agent_does_not_advance_the_checkpointed_watermark() -> None:
    pipe, _ = pipeline()
    t0 = time.time() - 5000
    send(pipe, "a", [at(t0, "a")], "k-any")
    assert orjson.loads(pipe.checkpoint_dedupe()[0][2])["signed_wm"] == pytest.approx(t0, abs=0.01)
    send(pipe, "b", [at(t0 + 2000, "b")], "k-any", offset=1)
    doc = orjson.loads(pipe.checkpoint_dedupe(unsaved={"b"})[0][2])
    assert doc["signed_wm"] == pytest.approx(t0, abs=0.01)  # b's events will be re-read after a crash


# ---------------------------------------------------------------- ts_future

def test_an_event_dated_23_hours_ahead_is_ts_future_not_clamped() -> None:
    pipe, sink = pipeline(signing_keys={})
    now = time.time()
    ahead, fine, edge = at(now + 23 * 3600, "bot"), at(now, "bot"), at(now + 299, "bot")
    assert send(pipe, "bot", [ahead, fine, edge], now=now) == ["ts_future"]
    assert sink.ids == [fine["event_id"], edge["event_id"]]
    assert pipe.counters.rejected["ts_future"] == 1


def test_a_signed_future_event_cannot_push_the_replay_window() -> None:
    pipe, sink = pipeline()
    now = time.time()
    assert send(pipe, "pay-1", [at(now + 20 * 3600, "pay-1")], "k-any", now=now) == ["ts_future"]
    assert pipe.signed_watermark(0) is None
    assert send(pipe, "pay-1", [at(now - 60, "pay-1")], "k-any", offset=1, now=now) == []


# ---------------------------------------------------------------- drill traffic

def test_forged_drill_traffic_is_refused_and_the_drill_key_signs_drills_only() -> None:
    pipe, sink = pipeline(drill_key_id="k-drill")
    now = time.time()
    assert send(pipe, "drill-bot", [at(now, "drill-bot")]) == ["bad_signature"]             # unsigned
    assert send(pipe, "drill-bot", [at(now, "drill-bot")], "k-any", offset=1) == ["bad_signature"]  # other key
    assert send(pipe, "prod-bot", [at(now, "prod-bot")], "k-drill", offset=2) == ["bad_signature"]  # drill key
    real = at(now, "drill-bot")
    assert send(pipe, "drill-bot", [real], "k-drill", offset=3) == []
    assert sink.got == [(real["event_id"], True)]


def test_without_a_drill_key_drill_agents_are_unattested_like_any_other() -> None:
    pipe, sink = pipeline(signing_keys={})
    ev = at(time.time(), "drill-bot", drill_id="x")
    assert send(pipe, "drill-bot", [ev]) == []
    assert sink.got == [(ev["event_id"], False)]


# ---------------------------------------------------------------- HTTP ingest: no re-signing, a signed path

class Capture:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def __call__(self, m: Outgoing) -> None:
        self.sent.append(m)


def ingest(**settings: Any) -> tuple[TraceIngest, Capture]:
    cap = Capture()
    s = Settings(signing_keys=SECRETS, ingest_tokens=[{"name": "t", "token_sha256": hash_token(TOKEN)}], **settings)
    return TraceIngest(s, OperatorRegistry.from_config([]), cap), cap


def post(ti: TraceIngest, body: bytes, content_type: str = "application/json", **headers: str | None):
    async def read(limit: int) -> bytes | None:
        return body if len(body) <= limit else None

    return asyncio.run(ti.handle(f"Bearer {TOKEN}", content_type, len(body), read, **headers))


def test_http_json_ingest_is_forwarded_unsigned_and_refused_where_signing_is_required() -> None:
    """Attack: an ingest-token holder posts events for an agent that must sign; the worker used to re-sign them."""
    ti, cap = ingest(require_signature=["agent:pay-*"])
    evs = [at(time.time(), "pay-1"), at(time.time(), "pay-1")]
    reply = post(ti, orjson.dumps(evs))
    assert reply.status == 200 and cap.sent and all(m.headers == {} for m in cap.sent)
    pipe, sink = pipeline(require_signature=["agent:pay-*"])
    for i, m in enumerate(cap.sent):
        dead = pipe.process(m.key, m.value, topic="agent-traces", partition=0, offset=i,
                            headers=list(m.headers.items()))
        assert [d.reason for d in dead] == ["bad_signature"]
    assert sink.ids == []


def test_http_signed_body_is_forwarded_verbatim_and_verified_by_the_consumer() -> None:
    ti, cap = ingest(require_signature=["agent:pay-*"])
    body = orjson.dumps([at(time.time(), "pay-1"), at(time.time(), "pay-1")])
    [(_, mac), (_, key_id)] = sig(body, "k-pay")
    reply = post(ti, body, signature=mac.decode(), key_id=key_id.decode())
    assert reply.status == 200 and reply.body["accepted"] == 2
    [m] = cap.sent
    assert m.key == b"pay-1" and m.value == body
    pipe, sink = pipeline(require_signature=["agent:pay-*"])
    assert pipe.process(m.key, m.value, topic="t", partition=0, offset=0, headers=list(m.headers.items())) == []
    assert [a for _, a in sink.got] == [True, True]


def test_http_signed_path_refuses_bad_requests() -> None:
    ti, cap = ingest(signing_key_scopes={"k-pay": ["agent:pay-*"]})
    now = time.time()
    two = orjson.dumps([at(now, "pay-1"), at(now, "pay-2")])
    mac = sig(two, "k-pay")[0][1].decode()
    assert post(ti, two, signature=mac, key_id="k-pay").status == 400  # two agents
    one = orjson.dumps([at(now, "pay-1")])
    assert post(ti, one, signature="v1=" + "0" * 64, key_id="k-pay").body["rejected"][0]["reason"] == "bad_signature"
    assert post(ti, one, signature=sig(one, "k-pay")[0][1].decode(), key_id="k-pay",
                content_type="text/plain").status == 415
    big = orjson.dumps([at(now, "pay-1", session_id="s" * 200) for _ in range(2000)])
    assert post(ti, big, signature=sig(big, "k-pay")[0][1].decode(), key_id="k-pay").status == 400
    unbound = orjson.dumps([at(now, "support-1")])
    reply = post(ti, unbound, signature=sig(unbound, "k-pay")[0][1].decode(), key_id="k-pay")
    assert reply.status == 400 and "not bound" in reply.body["rejected"][0]["detail"]
    assert cap.sent == []


def test_http_ingest_refuses_ts_future() -> None:
    ti, cap = ingest()
    now = time.time()
    reply = post(ti, orjson.dumps([at(now + 23 * 3600, "bot"), at(now, "bot")]))
    assert reply.status == 207 and [r["reason"] for r in reply.body["rejected"]] == ["ts_future"]


def test_policy_repr_shows_no_secret() -> None:
    pol = SignaturePolicy.of(Settings(signing_keys=SECRETS, drill_key_id="k-drill"))
    assert all(v not in repr(pol) for v in SECRETS.values())
