"""Issue #15 item 4 on a real broker: no ingest path mints attested traffic for a producer.

A worker with a keyring, ``require_signature: ["agent:pay-*"]`` and an ingest token. The
attacker holds the ingest token (or write access to ``otlp_spans``) but no signing key:
the worker used to re-sign what it forwarded, so a flood of ok calls for ``pay-*`` was
accepted as signed. Now it forwards unsigned and the consuming worker refuses it
(``bad_signature``); the producer that holds the key gets an end-to-end signed HTTP path.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from breakers.operators import hash_token
from helpers.hostile import calls, otlp_request, otlp_span, run_tag, wait_worker
from helpers.support import Topics, WorkerProc, start_worker
from streams.kafka.producer import TraceProducer
from streams.ops.procutil import stop_process

pytestmark = pytest.mark.broker

TOKEN = "ingest-" + run_tag() + run_tag()
SECRET = "pay-key-" + run_tag() + run_tag()


@pytest.fixture(scope="module")
def w(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:
    topics = Topics(f"sign-{run_tag()}-{os.getpid()}")
    env = {"TRIPWIRE_METRICS_CACHE_S": "0",
           "TRIPWIRE_INGEST_TOKENS": json.dumps([{"name": "edge", "token_sha256": hash_token(TOKEN)}]),
           "TRIPWIRE_SIGNING_KEYS": json.dumps({"k-pay": SECRET}),
           "TRIPWIRE_SIGNING_KEY_SCOPES": json.dumps({"k-pay": ["agent:pay-*"]}),
           "TRIPWIRE_REQUIRE_SIGNATURE": json.dumps(["agent:pay-*"])}
    worker = start_worker(broker, tmp_path_factory.mktemp("hostile-signing"), topics, app_id=f"tw-{topics.prefix}",
                          extra_env=env)
    try:
        yield worker
    finally:
        stop_process(worker.proc)  # type: ignore[arg-type]


def _bad(w: WorkerProc) -> float:
    return w.metric("tripwire_events_rejected_total", reason="bad_signature")


def _counted(w: WorkerProc) -> float:
    return w.metric("tripwire_events_total")


def test_http_json_ingest_is_not_re_signed(w: WorkerProc) -> None:
    agent = f"pay-http-{run_tag()}"
    bad0, counted0 = _bad(w), _counted(w)
    r = httpx.post(f"{w.web}/v1/traces", content=orjson.dumps(calls(agent, 50)),
                   headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, timeout=15)
    assert r.status_code == 200, r.text  # forwarded (unsigned): the consuming worker decides
    # the forwarded message is refused whole (its key alone is under the requirement): one dead letter
    wait_worker(w, lambda: _bad(w) - bad0 >= 1, 30, "the forwarded message refused as bad_signature")
    assert _counted(w) == counted0


def test_otlp_spans_are_not_re_signed(broker: Any, w: WorkerProc) -> None:
    agent = f"pay-otlp-{run_tag()}"
    bad0, counted0 = _bad(w), _counted(w)
    p = TraceProducer(broker.bootstrap, w.topics.otlp)
    p.send_raw(None, orjson.dumps(otlp_request([otlp_span(agent, tool="shell") for _ in range(20)])))
    p.close()
    wait_worker(w, lambda: _bad(w) - bad0 >= 1, 30, "the re-published message refused as bad_signature")
    assert _counted(w) == counted0


def test_signed_http_body_is_accepted_end_to_end_and_a_foreign_agent_is_not(w: WorkerProc) -> None:
    agent = f"pay-signed-{run_tag()}"
    counted0 = _counted(w)
    body = orjson.dumps(calls(agent, 30))
    mac = "v1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
               "X-Tripwire-Signature": mac, "X-Tripwire-Key-Id": "k-pay"}
    r = httpx.post(f"{w.web}/v1/traces", content=body, headers=headers, timeout=15)
    assert r.status_code == 200 and r.json()["accepted"] == 30, r.text
    wait_worker(w, lambda: _counted(w) - counted0 >= 30, 30, "the 30 signed events counted")
    # the same key cannot sign for an agent outside its binding
    other = orjson.dumps(calls(f"support-{run_tag()}", 3))
    headers["X-Tripwire-Signature"] = "v1=" + hmac.new(SECRET.encode(), other, hashlib.sha256).hexdigest()
    r = httpx.post(f"{w.web}/v1/traces", content=other, headers=headers, timeout=15)
    assert r.status_code == 400 and "not bound" in r.text
