"""Issue #15 (6, 9), without a broker: forged internal records, refused operator actions, fail mode.

Attacks: a ``breaker-state`` record written by something other than a worker (no signature, a
wrong one, a tombstone) tries to close a forced-open breaker; refused operator actions try to
leave no trace; ``TRIPWIRE_FAIL_MODE=open`` must actually open authz while state is unknown.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from breakers.introspect import KeyRing
from breakers.operators import OperatorRegistry, hash_token
from breakers.policy import load_policy
from breakers.state_machine import BreakerState, force_open
from streams.contract.internal_auth import (
    BAD_SIGNATURE,
    BREAKER_EVENTS,
    BREAKER_STATE,
    RECORD_KEY_ID_HEADER,
    RECORD_SIGNATURE_HEADER,
    UNAUTHENTICATED,
    RecordAuth,
    record_mac,
)
from streams.engine.monitor import Monitor
from streams.settings import DEFAULT_POLICY, Settings
from streams.worker.decisions import SignedTopic
from streams.worker.http.api import Api

KEYS = {"k-agents": b"producer-secret", "k-workers": b"worker-secret"}
SCOPE = "agent:victim"
OP_TOKEN, VIEWER_TOKEN = "o" * 40, "v" * 40


def _monitor(auth: RecordAuth | None) -> Monitor:
    mon = Monitor(load_policy(DEFAULT_POLICY))
    mon.record_auth = auth
    return mon


def _forced(now: float) -> bytes:
    st, _ = force_open(BreakerState.initial(SCOPE, now - 10), "ann", "stop it", now - 10)
    return orjson.dumps(st.to_dict())


def _closed(now: float) -> bytes:
    return orjson.dumps({"scope": SCOPE, "state": "closed", "since": now, "updated_at": now, "reason": "forged",
                         "actor": "ann", "schema": 1})


def test_forged_breaker_state_records_do_not_close_a_forced_open_breaker() -> None:
    auth = RecordAuth(KEYS, ["k-workers"])
    mon = _monitor(auth)
    now = time.time()
    key = SCOPE.encode()
    forced = _forced(now)
    mon.apply_remote(forced, key, auth.headers(BREAKER_STATE, key, forced))
    assert mon.states[SCOPE].state == "forced_open"

    closed = _closed(now)
    mon.apply_remote(closed, key, [])  # no signature
    mon.apply_remote(closed, key, [(RECORD_SIGNATURE_HEADER, b"r1=" + b"0" * 64), (RECORD_KEY_ID_HEADER, b"k-workers")])
    # a producer's key (it signs traces) is not a worker key: its record MAC does not count
    mon.apply_remote(closed, key, [(RECORD_SIGNATURE_HEADER, record_mac(KEYS["k-agents"], BREAKER_STATE, key,
                                                                        closed).encode()),
                                   (RECORD_KEY_ID_HEADER, b"k-agents")])
    # a worker's breaker-events record replayed into breaker-state: bound to its topic role
    mon.apply_remote(closed, key, auth.headers(BREAKER_EVENTS, key, closed))
    # the signature of another scope's record
    mon.apply_remote(closed, key, auth.headers(BREAKER_STATE, b"agent:other", closed))
    mon.apply_remote(None, key, [])  # an unsigned tombstone would delete the state
    assert mon.states[SCOPE].state == "forced_open"
    assert mon.ignored_remote_states[UNAUTHENTICATED] == 2
    assert mon.ignored_remote_states[BAD_SIGNATURE] == 4
    assert auth.counts[(BREAKER_STATE, BAD_SIGNATURE, "ignored")] == 4

    mon.apply_remote(closed, key, auth.headers(BREAKER_STATE, key, closed))  # a worker's record: applied
    assert mon.states[SCOPE].state == "closed"


def test_permissive_accepts_unsigned_records_but_counts_them_and_never_bad_ones() -> None:
    auth = RecordAuth(KEYS, ["k-workers"], mode="permissive")
    mon = _monitor(auth)
    now = time.time()
    key = SCOPE.encode()
    mon.apply_remote(_forced(now), key, [])
    assert mon.states[SCOPE].state == "forced_open"
    assert auth.counts[(BREAKER_STATE, UNAUTHENTICATED, "accepted")] == 1
    mon.apply_remote(_closed(now), key, [(RECORD_SIGNATURE_HEADER, b"r1=00"), (RECORD_KEY_ID_HEADER, b"k-workers")])
    assert mon.states[SCOPE].state == "forced_open" and mon.ignored_remote_states[BAD_SIGNATURE] == 1


def test_without_a_keyring_records_are_accepted_unsigned() -> None:
    """Nothing to authenticate with (the default, the demo): Kafka ACLs are the only protection."""
    auth = RecordAuth({})
    mon = _monitor(auth)
    now = time.time()
    mon.apply_remote(_closed(now), SCOPE.encode(), [])
    assert mon.states[SCOPE].state == "closed" and auth.headers(BREAKER_STATE, b"k", b"v") == []


class _Topic:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **kw: Any) -> None:
        self.sent.append(kw)


def test_every_record_a_worker_writes_through_a_signed_topic_verifies() -> None:
    auth = RecordAuth(KEYS, ["k-workers", "k-agents"])
    topic = _Topic()
    signed = SignedTopic(topic, auth, BREAKER_EVENTS)
    asyncio.run(signed.send(key=b"drill", value=b'{"type":"drill_result"}', partition=0))
    sent = topic.sent[0]
    assert sent["partition"] == 0 and dict(sent["headers"])[RECORD_KEY_ID_HEADER] == b"k-workers"
    assert auth.check(BREAKER_EVENTS, b"drill", sent["value"], list(sent["headers"].items())) == (True, None)


# ------------------------------------------------------------------ refused operator actions are audited
def _api() -> tuple[Api, list[dict[str, Any]]]:
    audited: list[dict[str, Any]] = []

    async def publish(change: Any) -> None:
        pass

    async def audit(record: dict[str, Any]) -> None:
        audited.append(record)

    ops = OperatorRegistry.from_config([{"name": "ann", "role": "operator", "token_sha256": hash_token(OP_TOKEN)},
                                        {"name": "vic", "role": "viewer", "token_sha256": hash_token(VIEWER_TOKEN)}])
    api = Api(Monitor(load_policy(DEFAULT_POLICY)), ops, KeyRing.from_config([]), publish, known=lambda: True,
              audit=audit)
    return api, audited


@pytest.mark.parametrize("auth,scope,action,body,status,actor", [
    (None, "agent:bot", "force-open", {"reason": "x"}, 401, "anonymous"),
    ("Bearer not-a-token-" + "z" * 30, "agent:bot", "reset", {"reason": "x"}, 401, "invalid token"),
    (f"Bearer {VIEWER_TOKEN}", "agent:bot", "force-open", {"reason": "x"}, 403, "vic"),
    (f"Bearer {OP_TOKEN}", "bogus\n2026 INFO forged", "force-open", {"reason": "x"}, 400, "ann"),
    (f"Bearer {OP_TOKEN}", "agent:bot", "approve", {"reason": "x"}, 409, "ann"),  # not escalated
    (f"Bearer {OP_TOKEN}", "agent:bot", "reset", {}, 400, "ann"),  # no reason
])
def test_a_refused_operator_action_is_audited_and_counted(auth: str | None, scope: str, action: str,
                                                          body: dict[str, Any], status: int, actor: str) -> None:
    api, audited = _api()
    reply = asyncio.run(api.action(auth, scope, action, orjson.dumps(body)))
    assert reply.status == status
    assert len(audited) == 1
    rec = audited[0]
    assert rec["type"] == "operator_action" and rec["result"] == "refused" and rec["status"] == status
    assert rec["actor"] == actor and rec["action"] == {"force-open": "force_open"}.get(action, action)
    assert "\n" not in rec["scope"] and rec["scope"] == ascii(scope)
    assert all(OP_TOKEN not in str(v) and VIEWER_TOKEN not in str(v) and "not-a-token" not in str(v)
               for v in rec.values())
    assert sum(n for (a, r), n in api.action_counts.items() if r != "ok") == 1


def test_an_accepted_action_is_counted_not_audited_as_refused() -> None:
    api, audited = _api()
    reply = asyncio.run(api.action(f"Bearer {OP_TOKEN}", "agent:bot", "force-open", orjson.dumps({"reason": "x"})))
    assert reply.status == 200 and audited == [] and api.action_counts[("force_open", "ok")] == 1


def test_a_flood_of_refused_actions_is_counted_but_bounded_on_the_topic() -> None:
    api, audited = _api()

    async def flood() -> None:
        for _ in range(250):
            await api.action(None, "agent:bot", "reset", b"{}")

    asyncio.run(flood())
    assert api.action_counts[("reset", "unauthorized")] == 250
    assert len(audited) == 100 and api.audit_suppressed == 150


# ------------------------------------------------------------------ TRIPWIRE_FAIL_MODE is read
def _worker_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fail_mode: str | None) -> Any:
    from streams.worker.app import create_app

    if fail_mode is None:
        monkeypatch.delenv("TRIPWIRE_FAIL_MODE", raising=False)
    else:
        monkeypatch.setenv("TRIPWIRE_FAIL_MODE", fail_mode)
    app = create_app(Settings(data_dir=tmp_path))
    ctx = app.tripwire  # type: ignore[attr-defined]
    ctx.api.known = lambda: False  # the worker is still reading breaker-state
    return ctx


@pytest.mark.parametrize("fail_mode,status", [(None, 403), ("open", 200), ("closed", 403)])
def test_fail_mode_env_decides_authz_while_state_is_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            fail_mode: str | None, status: int) -> None:
    ctx = _worker_api(monkeypatch, tmp_path, fail_mode)
    assert asyncio.run(ctx.api.authz("bot", "search", None)).status == status


def test_fail_mode_env_survives_a_policy_reload(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streams.worker.policy_watch import PolicyWatcher

    ctx = _worker_api(monkeypatch, tmp_path, "open")
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: reloaded\nfail_mode: closed\n")
    from streams.worker.app import effective_policy

    watcher = PolicyWatcher(policy, ctx.monitor, {"reload_ok": 0, "reload_error": 0}, _Topic(),
                            adjust=lambda p: effective_policy(p, ctx.settings))
    asyncio.run(watcher.poll(force=True))
    assert ctx.monitor.policy.policy_version == "reloaded" and ctx.monitor.policy.fail_mode == "open"
    assert asyncio.run(ctx.api.authz("bot", "search", None)).status == 200
