"""Signed traces: forged traffic for an agent that must sign cannot dilute its windows or close its breaker.

One real worker with two signing key ids (rotation) and ``require_signature`` for
``agent:pay-*`` and ``tenant:acme``. A signed agent is driven open with signed bad
traffic (half with the old key id, half with the new one); then forged ``ok``
tool calls are flooded in: unsigned, signed with a wrong secret, signed with an
unknown key id. The breaker stays open, the agent's windows do not move, and the
dead-letter topic holds every forged message with reason ``bad_signature``.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

import httpx
import orjson
import pytest

from helpers.faults import authz_status, calls, event, flags, incidents
from streams.ops.procutil import stop_process
from streams.kafka.producer import TraceProducer
from helpers.support import consume_all, start_worker, wait_for

pytestmark = pytest.mark.broker

OLD, NEW = "s3cret-old-0123456789", "s3cret-new-9876543210"
WRONG = "not-the-key"


def signed(value: bytes, secret: str, key_id: str) -> list[tuple[str, bytes]]:
    sig = "v1=" + hmac.new(secret.encode(), value, hashlib.sha256).hexdigest()
    return [("tripwire-signature", sig.encode()), ("tripwire-key-id", key_id.encode())]


def send(producer: TraceProducer, agent: str, events: list[dict], headers: list[tuple[str, bytes]] | None = None,
         sign: tuple[str, str] | None = None) -> None:
    value = orjson.dumps(events)
    producer.send_raw(agent.encode(), value, signed(value, *sign) if sign else headers)


def test_forged_ok_traffic_cannot_dilute_or_close_a_signed_agent(broker, tmp_path, isolated_topics) -> None:
    env = {"TRIPWIRE_METRICS_CACHE_S": "0",
           "TRIPWIRE_SIGNING_KEYS": orjson.dumps({"k-old": OLD, "k-new": NEW}).decode(),
           "TRIPWIRE_REQUIRE_SIGNATURE": '["agent:pay-*", "tenant:acme"]'}
    w = start_worker(broker, tmp_path, isolated_topics, app_id=f"tw-{isolated_topics.prefix}", extra_env=env)
    producer = TraceProducer(broker.bootstrap, isolated_topics.traces)
    agent = "pay-bot"
    try:
        # 1. signed bad traffic, across a key rotation: old key id for the first half, new for the rest
        evs = calls(agent, 220) + incidents(agent, 12) + flags(agent, 30)
        send(producer, agent, evs[:130], sign=(OLD, "k-old"))
        send(producer, agent, evs[130:], sign=(NEW, "k-new"))
        # an unsigned agent outside the requirement is accepted as before (control); it names its tenant:
        # a tenantless event would fall under "tenant:acme" (#15: a missing tenant cannot dodge a tenant rule)
        send(producer, "free-bot", [dict(e, tenant="other") for e in calls("free-bot", 20) + flags("free-bot", 2)])
        producer.flush()
        wait_for(lambda: authz_status(w.web, agent) == 403, 30, f"agent:{agent} to open")
        wait_for(lambda: w.metric("tripwire_events_total") == len(evs) + 22, 20, "all signed events counted")
        rate_before = w.metric("tripwire_near_miss_rate", agent=agent, tool="*", window="1h")
        assert rate_before == pytest.approx(30 / 220)
        state = httpx.get(f"{w.web}/v1/breakers/{quote('agent:' + agent, safe='')}", timeout=5).json()["state"]
        assert state == "open"

        # 2. the flood of forged ok calls: 20 messages of each kind, 100 events each
        forged = 0
        for i in range(20):
            send(producer, agent, calls(agent, 100, tag=f"u{i}-"))                                   # unsigned
            send(producer, agent, calls(agent, 100, tag=f"w{i}-"), sign=(WRONG, "k-new"))           # wrong secret
            send(producer, agent, calls(agent, 100, tag=f"k{i}-"), sign=(NEW, "k-unknown"))          # unknown key id
            forged += 3
        value = orjson.dumps(calls(agent, 100, tag="t-"))                                              # tampered
        producer.send_raw(agent.encode(), value.replace(b'"ok"', b'"error"', 1), signed(value, NEW, "k-new"))
        forged += 1
        # the tenant requirement is only known after parsing: per event, inside a mixed batch
        mixed = [event("side-bot", "side-1", tenant="acme"), event("side-bot", "side-2", tenant="other"),
                 event("side-bot", "side-3", tenant="acme")]
        send(producer, "side-bot", mixed)
        producer.flush()
        wait_for(lambda: w.metric("tripwire_events_rejected_total", reason="bad_signature") == forged + 2, 30,
                 "every forged message (and the 2 acme events) rejected as bad_signature")
        wait_for(lambda: w.metric("tripwire_events_total") == len(evs) + 22 + 1, 10, "the one 'other' event accepted")

        # 3. nothing moved: windows, state, authz
        assert w.metric("tripwire_near_miss_rate", agent=agent, tool="*", window="1h") == rate_before
        assert authz_status(w.web, agent) == 403
        state = httpx.get(f"{w.web}/v1/breakers/{quote('agent:' + agent, safe='')}", timeout=5).json()["state"]
        assert state == "open"

        # 4. the DLQ says why, per message (and per event for the mixed batch)
        dead = consume_all(broker.bootstrap, isolated_topics.dlq, forged + 2, timeout=20)
        reasons = [orjson.loads(r.value)["reason"] for r in dead]
        assert reasons.count("bad_signature") == forged + 2
        details = " ".join(orjson.loads(r.value)["detail"] for r in dead)
        assert "requires a signed message" in details and "unknown signing key id" in details
        assert "does not match" in details
        side = [orjson.loads(r.value) for r in dead if r.key == b"side-bot"]
        assert sorted(d["source"]["index"] for d in side) == [0, 2]
        # keys never reach the log
        log = w.log.read_text(errors="replace")
        assert OLD not in log and NEW not in log
    finally:
        producer.close()
        stop_process(w.proc)
