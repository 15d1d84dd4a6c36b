"""Issue #13 at the gateway: /v1/authz without X-Tool, and duplicate identity headers.

* Without an ``X-Tool`` header the worker used to check the agent's own scopes only, so a
  forced-open ``agent:X/tool:Y`` let a request through as long as the gateway left the header
  out. Now such a request is denied (403) while the agent has any enforcing tool scope
  (``agent:X/tool:*``, tenant-prefixed ones, cross-agent ``tool:*``), with a reason saying a
  tool header is needed or naming the scope; otherwise it is judged on the agent scopes.
* Two ``X-Agent-Id`` (or ``X-Tool``, ``X-Tenant``) headers used to be resolved first-wins: a
  client could smuggle a second identity past a gateway that appends its own. Now: 400.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from breakers.operators import generate_token, hash_token
from helpers.hostile import alive_or_fail, authz, calls, event, run_tag, wait_worker
from streams.ops.procutil import stop_process
from streams.kafka.producer import TraceProducer
from helpers.support import Topics, WorkerProc, start_worker

pytestmark = pytest.mark.broker

OPERATOR = generate_token()


@pytest.fixture(scope="module")
def w(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:
    topics = Topics(f"hostile-authz-{uuid.uuid4().hex[:6]}")
    env = {"TRIPWIRE_OPERATORS": json.dumps([{"name": "hostile-op", "role": "operator",
                                              "token_sha256": hash_token(OPERATOR)}])}
    worker = start_worker(broker, tmp_path_factory.mktemp("hostile-authz"), topics, app_id=f"tw-{topics.prefix}",
                          extra_env=env)
    yield worker
    stop_process(worker.proc)  # type: ignore[arg-type]


def act(w: WorkerProc, scope: str, action: str) -> httpx.Response:
    r = httpx.post(f"{w.web}/v1/breakers/{quote(scope, safe='')}/{action}",
                   headers={"Authorization": f"Bearer {OPERATOR}"}, json={"reason": f"hostile test: {action}"},
                   timeout=10)
    assert r.status_code == 200, (scope, action, r.status_code, r.text)
    return r


def assert_needs_tool(r: httpx.Response, scope: str) -> None:
    """403 whose reason (body and header) says a tool header is needed or names the enforcing scope."""
    assert r.status_code == 403, (r.status_code, r.text)
    body = r.json()
    assert body["allow"] is False
    for reason in (body["reason"], r.headers["X-Tripwire-Reason"]):
        low = reason.lower()
        assert "x-tool" in low or "tool header" in low or scope in reason, reason


def test_no_tool_header_is_denied_while_an_agent_tool_scope_is_forced_open(w: WorkerProc) -> None:
    run = run_tag()
    agent, other = f"nt-{run}", f"nt-other-{run}"
    scope = f"agent:{agent}/tool:shell"
    assert authz(w, agent).status_code == 200  # nothing enforcing yet: judged on the (closed) agent scopes
    act(w, scope, "force-open")
    r = authz(w, agent, "shell")
    assert r.status_code == 403 and r.headers["X-Tripwire-State"] == "forced_open"
    assert authz(w, agent, "search").status_code == 200  # another tool of the agent
    assert_needs_tool(authz(w, agent), scope)            # the gateway left X-Tool out
    assert_needs_tool(authz(w, agent, method="POST"), scope)
    assert_needs_tool(authz(w, agent, tenant=f"acme-{run}"), scope)  # a tenant header does not dodge it
    assert authz(w, other).status_code == 200            # other agents are judged as before
    act(w, scope, "reset")
    assert authz(w, agent).status_code == 200


def test_no_tool_header_is_denied_while_a_tenant_agent_tool_scope_is_forced_open(w: WorkerProc) -> None:
    run = run_tag()
    agent, tenant = f"nt-t-{run}", f"acme-{run}"
    scope = f"tenant:{tenant}/agent:{agent}/tool:db.write"
    act(w, scope, "force-open")
    assert authz(w, agent, "db.write", tenant).status_code == 403
    assert authz(w, agent, "search", tenant).status_code == 200
    assert_needs_tool(authz(w, agent, tenant=tenant), scope)
    assert authz(w, f"nt-t-other-{run}", tenant=tenant).status_code == 200  # another agent of the tenant


def test_no_tool_header_is_denied_while_a_cross_agent_tool_scope_is_forced_open(w: WorkerProc) -> None:
    run = run_tag()
    agent, scope = f"nt-x-{run}", f"tool:nuke-{run}"
    act(w, scope, "force-open")
    try:
        assert authz(w, agent, f"nuke-{run}").status_code == 403
        assert authz(w, agent, "search").status_code == 200
        assert_needs_tool(authz(w, agent), scope)
    finally:
        act(w, scope, "reset")  # the module's other tests ask without X-Tool too
    assert authz(w, agent).status_code == 200


def test_no_tool_header_is_denied_while_a_tool_scope_is_escalated_on_evidence(broker: Any, w: WorkerProc) -> None:
    """Escalated is enforcing too: here the policy escalates ``agent:E/tool:shell`` (10 high flags in 20
    shell calls: burn 25x) while ``agent:E`` itself only goes to shadow (400 more calls on another tool)."""
    run = run_tag()
    agent = f"nt-esc-{run}"
    scope = f"agent:{agent}/tool:shell"
    p = TraceProducer(broker.bootstrap, w.topics.traces)
    p.send_batch(agent, calls(agent, 400, tool="search") + calls(agent, 20, tool="shell")
                 + [event(agent, "monitor_flag") for _ in range(10)])
    p.close()
    wait_worker(w, lambda: authz(w, agent, "shell").status_code == 403, 30,
                f"{scope} escalated (consequential tool shell denied)")
    r = authz(w, agent, "shell")
    assert (r.status_code, r.headers["X-Tripwire-State"]) == (403, "escalated"), r.headers
    assert authz(w, agent, "search").status_code == 200
    assert_needs_tool(authz(w, agent), scope)


@pytest.mark.parametrize("headers", [
    [("X-Agent-Id", "innocent"), ("X-Agent-Id", "{victim}"), ("X-Tool", "shell")],
    [("X-Agent-Id", "{victim}"), ("X-Agent-Id", "innocent"), ("X-Tool", "shell")],
    [("X-Agent-Id", "innocent"), ("x-agent-id", "{victim}"), ("X-Tool", "shell")],
    [("X-Agent-Id", "innocent"), ("X-Tool", "search"), ("X-Tool", "shell")],
    [("X-Agent-Id", "innocent"), ("X-Tool", "search"), ("X-Tenant", "acme"), ("X-Tenant", "evil")],
], ids=["agent-id-twice", "agent-id-twice-victim-first", "agent-id-twice-other-case", "tool-twice", "tenant-twice"])
def test_duplicate_identity_headers_are_a_bad_request(w: WorkerProc, headers: list[tuple[str, str]]) -> None:
    victim = f"dup-victim-{run_tag()}"
    act(w, f"agent:{victim}", "force-open")
    sent = [(k, v.replace("{victim}", victim)) for k, v in headers]
    for method in ("GET", "POST"):
        r = authz(w, headers=sent, method=method)
        assert r.status_code == 400, (method, sent, r.status_code, r.text)
        assert r.json().get("allow") in (False, None), r.text
    # each header once: judged as usual
    assert authz(w, "innocent", "shell").status_code == 200
    assert authz(w, victim, "shell").status_code == 403
    alive_or_fail(w, "after the duplicate headers")
