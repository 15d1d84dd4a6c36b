"""Operator API security against a real worker configured with viewer / operator / admin tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from helpers.e2e import Tokens, bearer, scope_url
from helpers.support import Topics, WorkerProc, consume_all, start_worker, stop_process, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

RUN = uuid.uuid4().hex[:6]
AGENT = f"ops-{RUN}"
SCOPE = f"agent:{AGENT}"


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture(scope="module")
def ops_worker(broker: Any, tmp_path_factory: pytest.TempPathFactory, tokens: Tokens) -> Iterator[WorkerProc]:
    w = start_worker(broker, tmp_path_factory.mktemp("ops"), Topics(f"ops-{RUN}"), app_id=f"tw-ops-{RUN}",
                     extra_env=tokens.env())
    yield w
    stop_process(w.proc)  # type: ignore[arg-type]


def act(w: WorkerProc, scope: str, action: str, token: str | None, body: Any = None,
        raw: bytes | None = None) -> httpx.Response:
    headers = bearer(token) if token else {}
    if raw is not None:
        return httpx.post(scope_url(w.web, scope, action), headers=headers, content=raw, timeout=10)
    return httpx.post(scope_url(w.web, scope, action), headers=headers, json=body, timeout=10)


def authz(w: WorkerProc, agent: str, tool: str = "search") -> httpx.Response:
    return httpx.get(f"{w.web}/v1/authz", headers={"X-Agent-Id": agent, "X-Tool": tool}, timeout=5)


def test_authentication_and_roles(ops_worker: WorkerProc, tokens: Tokens) -> None:
    w = ops_worker
    reason = {"reason": "e2e"}
    assert httpx.get(f"{w.web}/v1/breakers", timeout=5).status_code == 401
    assert httpx.get(f"{w.web}/v1/breakers", headers=bearer("not-a-token"), timeout=5).status_code == 401
    assert httpx.get(f"{w.web}/v1/breakers", headers={"Authorization": tokens.viewer}, timeout=5).status_code == 401
    assert httpx.get(f"{w.web}/v1/breakers", headers=bearer(tokens.viewer), timeout=5).status_code == 200
    assert act(w, SCOPE, "force-open", None, reason).status_code == 401
    assert act(w, SCOPE, "force-open", "wrong-" + tokens.operator, reason).status_code == 401
    r = act(w, SCOPE, "force-open", tokens.viewer, reason)
    assert r.status_code == 403 and "viewer" in r.json()["error"]
    assert authz(w, AGENT).status_code == 200  # nothing happened


def test_force_open_is_audited_enforced_and_reset(ops_worker: WorkerProc, tokens: Tokens, broker: Any) -> None:
    w = ops_worker
    assert act(w, SCOPE, "force-open", tokens.operator, {}).status_code == 400  # reason required
    assert act(w, SCOPE, "force-open", tokens.operator, {"reason": "   "}).status_code == 400
    reason = f"e2e: suspicious payments by {AGENT}"
    r = act(w, SCOPE, "force-open", tokens.operator, {"reason": reason})
    assert r.status_code == 200, r.text
    assert r.json()["breaker"]["state"] == "forced_open" and r.json()["actor"] == "e2e-operator"

    denied = authz(w, AGENT, tool="anything")
    assert denied.status_code == 403
    assert denied.headers["X-Tripwire-State"] == "forced_open"
    assert reason in denied.headers["X-Tripwire-Reason"]
    assert authz(w, f"other-{RUN}").status_code == 200

    # approvals apply to escalated scopes only
    r = act(w, SCOPE, "approve", tokens.operator, {"reason": "let it", "ttl_s": 600})
    assert r.status_code == 409 and r.json()["state"] == "forced_open"

    r = act(w, SCOPE, "reset", tokens.operator, {"reason": "e2e: investigated, false alarm"})
    assert r.status_code == 200 and r.json()["breaker"]["state"] == "closed"
    assert authz(w, AGENT).status_code == 200

    def audit() -> list[dict[str, Any]] | None:
        recs = [orjson.loads(m.value) for m in consume_all(broker.bootstrap, w.topics.breaker_events, 2, timeout=5)]
        mine = [d for d in recs if d.get("scope") == SCOPE and d.get("type") == "transition"]
        return mine if len(mine) >= 2 else None

    records = wait_for(audit, 30, "two audit records in breaker-events")
    forced = next(d for d in records if d["action"] == "force_open")
    assert (forced["actor"], forced["reason"], forced["from"], forced["to"]) == (
        "e2e-operator", reason, "closed", "forced_open")
    reset = next(d for d in records if d["action"] == "reset")
    assert (reset["actor"], reset["to"]) == ("e2e-operator", "closed")


def test_hostile_input_never_500(ops_worker: WorkerProc, tokens: Tokens) -> None:
    w = ops_worker
    # oversized body
    big = orjson.dumps({"reason": "x" * (64 * 1024)})
    assert act(w, SCOPE, "force-open", tokens.operator, raw=big).status_code == 413
    # not JSON / not an object
    assert act(w, SCOPE, "force-open", tokens.operator, raw=b"{nope").status_code == 400
    assert act(w, SCOPE, "force-open", tokens.operator, raw=b"[1,2]").status_code == 400

    odd = ["../../etc/passwd", "agent:" + "a" * 10_000, "agent:ünïcödé-🤖", "agent:a%2Ftool:shell",
           "agent:a/../../tool:x", "tenant:/agent:", "agent:a\nb", "", " ", "%00"]
    for scope in odd:
        for r in (httpx.get(scope_url(w.web, scope), headers=bearer(tokens.viewer), timeout=10),
                  act(w, scope, "reset", tokens.operator, {"reason": "e2e odd scope"})):
            assert r.status_code in (200, 400, 404, 405, 413, 414, 431), (scope[:60], r.status_code, r.text[:200])
            assert r.status_code < 500, (scope[:60], r.status_code)
    # an unencoded traversal in the raw path never reaches another route with a 500 either
    r = httpx.get(f"{w.web}/v1/breakers/..%2F..%2Fetc%2Fpasswd", headers=bearer(tokens.viewer), timeout=5)
    assert r.status_code in (400, 404), r.text
    # the %2F-encoded slash is decoded to an agent×tool scope, handled correctly
    r = httpx.get(scope_url(w.web, f"agent:{AGENT}/tool:shell"), headers=bearer(tokens.viewer), timeout=5)
    assert r.status_code == 200 and r.json()["scope"] == f"agent:{AGENT}/tool:shell"
    # the worker is still healthy
    assert httpx.get(f"{w.web}/healthz", timeout=5).status_code == 200


def test_tokens_never_logged(ops_worker: WorkerProc, tokens: Tokens) -> None:
    log = ops_worker.log.read_text(errors="replace")
    assert "e2e-operator" in log  # the audit lines are there, naming the operator...
    for token in tokens.all():
        assert token not in log  # ...but never a token
        assert token[:16] not in log
