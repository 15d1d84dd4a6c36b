"""Issue #15 (6, 9) on the real broker: forged internal records, refused actions, forged drill results, slow-loris.

With a signing keyring configured, every record a worker writes to ``breaker-state`` /
``breaker-events`` carries a record HMAC (``streams.contract.internal_auth``); records written
straight to the topics by anyone else are ignored and counted:

* a forged ``closed`` record for a force-opened scope used to make authz answer 200 at once (and,
  being the newest record of the compacted topic, to lose the force-open at restart);
* a forged ``drill_result`` on ``breaker-events`` used to count as a passing drill (hiding the
  drill-overdue alert);
* refused operator actions used to leave nothing on ``breaker-events``;
* 40 slow-loris connections to the web port used to stay open (aiohttp's 3630 s default).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from helpers.hostile import alive_or_fail, authz, run_tag, wait_worker
from helpers.support import Topics, WorkerProc, consume_all, start_worker
from kafka import KafkaProducer

from breakers.operators import generate_token, hash_token
from streams.contract.internal_auth import BREAKER_STATE, RECORD_KEY_ID_HEADER, RECORD_SIGNATURE_HEADER, RecordAuth
from streams.ops.procutil import stop_process

pytestmark = pytest.mark.broker

OPERATOR = generate_token()
KEYS = {"k-producer": "producer-secret-" + uuid.uuid4().hex, "k-worker": "worker-secret-" + uuid.uuid4().hex}
ENV = {"TRIPWIRE_OPERATORS": json.dumps([{"name": "hostile-op", "role": "operator",
                                          "token_sha256": hash_token(OPERATOR)}]),
       "TRIPWIRE_SIGNING_KEYS": json.dumps(KEYS), "TRIPWIRE_INTERNAL_KEY_IDS": json.dumps(["k-worker"]),
       "TRIPWIRE_METRICS_CACHE_S": "0", "TRIPWIRE_HTTP_READ_TIMEOUT_S": "2"}


@pytest.fixture(scope="module")
def setup(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProc, Path, Topics]]:
    topics = Topics(f"hostile-internal-{uuid.uuid4().hex[:6]}")
    tmp = tmp_path_factory.mktemp("hostile-internal")
    worker = start_worker(broker, tmp, topics, app_id=f"tw-{topics.prefix}", extra_env=ENV)
    yield worker, tmp, topics
    stop_process(worker.proc)  # type: ignore[arg-type]


def act(w: WorkerProc, scope: str, action: str, token: str | None = OPERATOR) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{w.web}/v1/breakers/{quote(scope, safe='')}/{action}", headers=headers,
                      json={"reason": f"hostile test: {action}"}, timeout=10)


def _closed(scope: str, at: float) -> bytes:
    return orjson.dumps({"scope": scope, "state": "closed", "since": at, "updated_at": at, "reason": "all clear",
                         "actor": "hostile-op", "schema": 1})


def _send(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]],
          partition: int | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for key, value, headers in records:
            producer.send(topic, key=key, value=value, headers=headers, partition=partition)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)


def test_forged_breaker_state_cannot_close_a_forced_open_breaker_now_or_after_a_restart(
        broker: Any, setup: tuple[WorkerProc, Path, Topics]) -> None:
    w, tmp, topics = setup
    run = run_tag()
    victim, scope = f"in-victim-{run}", f"agent:in-victim-{run}"
    assert act(w, scope, "force-open").status_code == 200
    wait_worker(w, lambda: authz(w, victim, "shell").status_code == 403, 15, "the force-open applied")
    key = scope.encode()
    now = time.time()
    keyring = {k: v.encode() for k, v in KEYS.items()}
    producer_key = RecordAuth(keyring, ["k-producer"])  # a producer's key
    forged = _closed(scope, now + 5)
    # after the forgeries, a record signed with the worker key (as a worker would): once it is applied,
    # the reader went past them
    sentinel = f"agent:in-sentinel-{run}".encode()
    sentinel_value = orjson.dumps({"scope": sentinel.decode(), "state": "forced_open", "since": now,
                                   "updated_at": now, "reason": "sentinel", "actor": "hostile-op", "schema": 1})
    _send(broker.bootstrap, topics.breaker_state, [
        (key, forged, []),  # unsigned
        (key, forged, [(RECORD_SIGNATURE_HEADER, b"r1=" + b"ab" * 32), (RECORD_KEY_ID_HEADER, b"k-worker")]),
        (key, forged, producer_key.headers(BREAKER_STATE, key, forged)),  # signed, but not with a worker key
        (key, None, []),  # a tombstone would forget the state
        (sentinel, sentinel_value, RecordAuth(keyring, ["k-worker"]).headers(BREAKER_STATE, sentinel, sentinel_value)),
    ])
    wait_worker(w, lambda: authz(w, f"in-sentinel-{run}", "shell").status_code == 403, 30, "the sentinel applied")
    assert authz(w, victim, "shell").status_code == 403  # the attack: a forged closed record answered 200
    name = "tripwire_breaker_state_records_ignored_total"
    wait_worker(w, lambda: w.metric(name, reason="unauthenticated") >= 2 and w.metric(name, reason="bad_signature")
                >= 2, 30, "the forged records ignored and counted")
    assert authz(w, victim, "shell").status_code == 403
    assert w.metric("tripwire_internal_records_unauthenticated_total", topic="breaker-state", outcome="ignored") >= 4
    # the worker's own records are signed with the worker key
    own = [r for r in consume_all(broker.bootstrap, topics.breaker_state, 1) if r.key == scope.encode()]
    assert own and dict(own[0].headers)[RECORD_KEY_ID_HEADER] == b"k-worker"

    # at restart the forged records are the newest of the compacted topic: still ignored
    stop_process(w.proc)  # type: ignore[arg-type]
    w2 = start_worker(broker, tmp, topics, app_id=w.app_id, port=w.port, extra_env=ENV)
    w.proc = w2.proc
    assert authz(w2, victim, "shell").status_code == 403
    assert w2.metric(name, reason="unauthenticated") >= 2
    # an operator's reset (signed by the worker) still closes it
    assert act(w2, scope, "reset").status_code == 200
    wait_worker(w2, lambda: authz(w2, victim, "shell").status_code == 200, 15, "the reset applied")


def test_refused_operator_actions_are_audited_on_breaker_events(broker: Any,
                                                                setup: tuple[WorkerProc, Path, Topics]) -> None:
    w, _, topics = setup
    run = run_tag()
    scope = f"agent:in-refused-{run}"
    bad_token = "guess-" + uuid.uuid4().hex
    assert act(w, scope, "force-open", token=None).status_code == 401
    assert act(w, scope, "reset", token=bad_token).status_code == 401
    assert act(w, f"bogus-{run}", "force-open").status_code == 400

    def audited() -> list[dict[str, Any]]:
        recs = consume_all(broker.bootstrap, topics.breaker_events, 1, timeout=3)
        docs = [orjson.loads(r.value) for r in recs if r.value and b"operator_action" in r.value]
        mine = [d for d in docs if run in d.get("scope", "")]
        return mine if len(mine) >= 3 else []

    docs = wait_worker(w, audited, 30, "3 audit records")
    actors = sorted(d["actor"] for d in docs)
    assert actors == ["anonymous", "hostile-op", "invalid token"]
    assert all(d["result"] == "refused" and bad_token not in json.dumps(d) and OPERATOR not in json.dumps(d)
               for d in docs)
    assert {d["status"] for d in docs} == {401, 400}
    assert w.metric("tripwire_operator_actions_total", result="unauthorized") >= 2


def test_a_forged_drill_result_does_not_count(broker: Any, setup: tuple[WorkerProc, Path, Topics]) -> None:
    w, _, topics = setup
    run = run_tag()
    forged = orjson.dumps({"type": "drill_result", "drill_id": f"forged-{run}", "result": "pass",
                           "finished_at": time.time()})
    sentinel = orjson.dumps({"type": "drill_result", "drill_id": f"sentinel-{run}", "result": "fail",
                             "finished_at": time.time()})
    worker_key = RecordAuth({k: v.encode() for k, v in KEYS.items()}, ["k-worker"])
    _send(broker.bootstrap, topics.breaker_events, [
        (b"drill", forged, []), (b"drill", sentinel, worker_key.headers("breaker-events", b"drill", sentinel))],
        partition=0)
    # a real one, reported by an operator, is re-published signed by the worker and counted
    r = httpx.post(f"{w.web}/v1/drills", headers={"Authorization": f"Bearer {OPERATOR}"},
                   json={"drill_id": f"real-{run}", "result": "fail", "finished_at": time.time()}, timeout=10)
    assert r.status_code == 200 and r.json()["counted"], r.text
    wait_worker(w, lambda: w.metric("tripwire_drill_runs_total", result="fail") >= 2, 30,
                "the reported and the sentinel drill results counted")
    assert w.metric("tripwire_drill_runs_total", result="pass") == 0  # the attack: the forged pass counted
    assert w.metric("tripwire_internal_records_unauthenticated_total", topic="breaker-events",
                    reason="unauthenticated") >= 1
    signed = [rec for rec in consume_all(broker.bootstrap, topics.breaker_events, 1, timeout=3)
              if rec.value and f"real-{run}".encode() in rec.value]
    assert signed and dict(signed[0].headers).get(RECORD_KEY_ID_HEADER) == b"k-worker"


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slow_loris_connections_are_closed(setup: tuple[WorkerProc, Path, Topics]) -> None:
    w, _, _ = setup
    socks: list[socket.socket] = []
    try:
        for i in range(40):
            s = socket.create_connection(("127.0.0.1", w.port), timeout=5)
            # half a request head (slow headers) on 30, a complete head with a body that never comes on 10
            if i < 30:
                s.sendall(b"GET /v1/authz HTTP/1.1\r\nHost: x\r\nX-Agent-Id: slow\r\n")
            else:
                s.sendall(b"POST /v1/drills HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                          + OPERATOR.encode() + b"\r\nContent-Length: 1000\r\n\r\n{")
            s.setblocking(False)
            socks.append(s)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # keep trickling header bytes: must not keep them open
            for s in socks[:30]:
                try:
                    s.send(b"X-Pad: 1\r\n")
                except OSError:
                    pass
            time.sleep(0.5)
        # closed within generous bounds of the 2 s read timeout; meanwhile the worker keeps answering
        wait_worker(w, lambda: all(_closed_by_peer(s) for s in socks), 30, "the 40 slow connections closed")
        assert authz(w, "after-loris", "search").status_code == 200
        alive_or_fail(w, "after the slow-loris connections")
    finally:
        for s in socks:
            s.close()
