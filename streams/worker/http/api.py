"""HTTP API logic, independent of the web framework: authz, introspection, operator actions.

Each handler returns a :class:`Reply`; ``streams.worker.http.routes`` adapts them to faust views.
Operator actions need a bearer token with a role (viewer < operator < admin) and a
reason, and are written to ``breaker-events`` with the actor. A refused action is written
there too (``{"type": "operator_action", "result": "refused", ...}``: action, the scope as
given, who — the operator's name, "anonymous" or "invalid token" —, status, reason) and
counted in ``tripwire_operator_actions_total{action,result}``. Tokens never reach the logs
or the audit records.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from breakers.authz import decide
from breakers.introspect import KeyRing, introspect
from breakers.operators import Operator, OperatorRegistry, approval_ttl, can, validate_reason
from breakers.scope import ScopeError
from breakers.state_machine import (
    CLOSED,
    ENFORCING,
    HALF_OPEN,
    BreakerActionError,
    BreakerState,
    approve,
    force_open,
    probe,
    reset,
)
from streams.engine.monitor import Change, Monitor

log = logging.getLogger("tripwire.api")
audit = logging.getLogger("tripwire.audit")

MAX_BODY_BYTES = 16 * 1024
#: ``authz_requests_total{decision}`` of a refused ambiguous request (duplicate identity headers): a 400
BAD_REQUEST = "bad_request"
ACTIONS = {"force-open": "force_open", "reset": "reset", "approve": "approve"}
#: ``result`` label of tripwire_operator_actions_total per HTTP status of an action's answer
ACTION_RESULTS = {200: "ok", 400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  409: "conflict", 413: "invalid"}
#: refused actions written to breaker-events per AUDIT_WINDOW_S at most (the rest are counted, and logged as such)
AUDIT_MAX_PER_WINDOW = 100
AUDIT_WINDOW_S = 10.0


@dataclass
class Reply:
    """An HTTP answer: ``body`` is sent as JSON, or as raw bytes of ``content_type`` when that is set."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


Publish = Callable[[Change], Awaitable[None]]
#: writes one audit record (a JSON object) to breaker-events
Audit = Callable[[dict[str, Any]], Awaitable[None]]


def _err(status: int, message: str, **extra: Any) -> Reply:
    return Reply(status, {"error": message, **extra})


def state_view(st: BreakerState, now: float) -> dict[str, Any]:
    d = st.to_dict()
    d["enforcing"] = st.state in ENFORCING
    d["age_s"] = round(max(0.0, now - st.since), 3) if st.since else None
    return d


class Api:
    """The worker's HTTP endpoints, as plain async methods."""

    def __init__(
        self,
        monitor: Monitor,
        operators: OperatorRegistry,
        keys: KeyRing,
        publish: Publish,
        known: Callable[[], bool],
        observe_authz: Callable[[str, float], None] | None = None,
        audit: Audit | None = None,
    ) -> None:
        self.monitor = monitor
        self.operators = operators
        self.keys = keys
        self.publish = publish
        self.known = known
        self.observe_authz = observe_authz
        #: with no operator configured, reads are open and actions are refused (401)
        self.auth_required = len(operators) > 0
        self.audit = audit
        #: (action, result) → operator actions answered, for tripwire_operator_actions_total
        self.action_counts: Counter[tuple[str, str]] = Counter(
            {(a, r): 0 for a in ACTIONS.values() for r in ("ok", "unauthorized", "forbidden")})
        self._audit_window = (0.0, 0)  # (window start, refused records written in it)
        #: scope → authz calls it denied, for tripwire_authz_denied_total{scope} (non-closed scopes only)
        self.denied_by_scope: Counter[str] = Counter()
        self.audit_suppressed = 0

    # -------------------------------------------------------------- gateways
    async def authz(self, agent: str | None, tool: str | None, tenant: str | None) -> Reply:
        started = time.perf_counter()
        mon = self.monitor
        if not agent:
            reply = Reply(403, {"allow": False, "reason": "missing X-Agent-Id header"},
                          {"X-Tripwire-Reason": "missing X-Agent-Id header", "X-Tripwire-State": "invalid"})
        else:
            now = mon.clock.now()
            d = decide(mon.states, agent, tool or None, tenant or None, now, mon.policy, self.known())
            if d.probe and d.scope is not None:
                taken = self._take_probe(d.scope, now)
                if taken is None:
                    d = type(d)(False, 403, f"{HALF_OPEN}: no probe slot left", HALF_OPEN, d.scope)
                else:
                    await self.publish(Change(taken, []))
            reply = Reply(d.status, {"allow": d.allow, "reason": d.reason, "state": d.state, "scope": d.scope},
                          d.headers)
            if not d.allow and d.scope is not None:
                self.denied_by_scope[d.scope] += 1
        if self.observe_authz is not None:
            self.observe_authz("allow" if reply.status == 200 else "deny", time.perf_counter() - started)
        return reply

    def authz_bad_request(self, reason: str) -> Reply:
        """400 for a request whose identity is ambiguous (e.g. two ``X-Agent-Id`` headers): refused,
        never guessed, and counted as ``authz_requests_total{decision="bad_request"}``."""
        reply = Reply(400, {"allow": False, "reason": reason, "state": "invalid", "scope": None},
                      {"X-Tripwire-Reason": reason, "X-Tripwire-State": "invalid"})
        if self.observe_authz is not None:
            self.observe_authz(BAD_REQUEST, 0.0)
        return reply

    def _take_probe(self, scope: str, now: float) -> BreakerState | None:
        """Take one half-open probe slot of ``scope`` for a call a gateway is about to forward (authz and
        introspection alike): the new state (the caller publishes it), or None when no slot was left."""
        mon = self.monitor
        current = mon.states.get(scope)
        if current is None:
            return None
        new, admitted = probe(current, now)
        if not admitted:
            return None
        mon.states[scope] = new
        return new

    async def introspect(self, body: bytes, content_type: str, authorization: str | None) -> Reply:
        if self.auth_required and self._who(authorization) is None:
            return Reply(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
        if len(body) > MAX_BODY_BYTES:
            return _err(413, "body too large")
        token: str | None = None
        if "json" in content_type:
            try:
                doc = orjson.loads(body or b"{}")
                token = doc.get("token") if isinstance(doc, dict) else None
            except orjson.JSONDecodeError:
                return _err(400, "invalid JSON")
        else:
            token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [None])[0]
        if not token or not isinstance(token, str):
            return _err(400, "missing token parameter (RFC 7662)")
        mon = self.monitor
        now = mon.clock.now()
        taken: list[BreakerState] = []

        def take_probe(scope: str) -> bool:  # synchronous: the slot is taken before the answer is built
            new = self._take_probe(scope, now)
            if new is not None:
                taken.append(new)
            return new is not None

        answer = introspect(token, self.keys, mon.states, now, mon.policy, self.known(), take_probe=take_probe)
        for new in taken:
            await self.publish(Change(new, []))
        return Reply(200, answer)

    # -------------------------------------------------------------- operators
    def _who(self, authorization: str | None) -> Operator | None:
        return self.operators.authenticate(authorization)

    def _viewer(self, authorization: str | None) -> Reply | None:
        if not self.auth_required:
            return None
        op = self._who(authorization)
        if op is None:
            return Reply(401, {"error": "unauthorized: bearer token required"}, {"WWW-Authenticate": "Bearer"})
        if not can(op, "list"):
            return _err(403, "forbidden")
        return None

    async def list_breakers(self, authorization: str | None, state: str | None = None) -> Reply:
        denied = self._viewer(authorization)
        if denied:
            return denied
        now = self.monitor.clock.now()
        items = [state_view(st, now) for st in self.monitor.states.values() if state in (None, "", st.state)]
        items.sort(key=lambda d: (not d["enforcing"], d["scope"]))
        return Reply(200, {"breakers": items, "known": self.known(), "policy_version": self.monitor.policy.policy_version})

    async def show_breaker(self, authorization: str | None, raw_scope: str) -> Reply:
        denied = self._viewer(authorization)
        if denied:
            return denied
        try:
            scope = self.monitor.policy.input_scope(raw_scope)  # the route decoded the path once
        except ScopeError as exc:
            return _err(400, f"invalid scope: {exc}")
        mon = self.monitor
        st = mon.states.get(scope)
        verdicts = mon.explain(scope)
        if st is None:
            return Reply(200, {"scope": scope, "state": CLOSED, "known": self.known(), "recorded": False,
                               "verdicts": verdicts})
        return Reply(200, {**state_view(st, mon.clock.now()), "recorded": True, "verdicts": verdicts})

    async def action(self, authorization: str | None, raw_scope: str, action: str, body: bytes) -> Reply:
        """An operator action; every answer is counted, and a refused one is audited on breaker-events."""
        kind = ACTIONS.get(action)
        op = self._who(authorization)
        reply = await self._action(op, kind, raw_scope, action, body)
        result = ACTION_RESULTS.get(reply.status, "invalid")
        self.action_counts[(kind or "unknown", result)] += 1
        if reply.status != 200:
            who = op.name if op is not None else ("anonymous" if not (authorization or "").strip() else "invalid token")
            error = str(reply.body.get("error", "")) if isinstance(reply.body, dict) else ""
            # scope and action as given, escaped: an attacker's newline never forges a log line
            audit.warning("refused %s on %s by %s: %d %s", ascii((kind or action)[:64]), ascii(raw_scope[:200]),
                          ascii(who), reply.status, ascii(error[:200]))
            await self._audit_refused({"type": "operator_action", "result": "refused", "action": kind or "unknown",
                                       "requested": ascii(action[:64]), "scope": ascii(raw_scope[:300]),
                                       "actor": who, "status": reply.status, "reason": error[:300],
                                       "ts": time.time()})
        return reply

    async def _audit_refused(self, record: dict[str, Any]) -> None:
        """Write a refused action to breaker-events: at most AUDIT_MAX_PER_WINDOW per window (the rest counted)."""
        if self.audit is None:
            return
        now = time.monotonic()
        start, written = self._audit_window
        if now - start >= AUDIT_WINDOW_S:
            if self.audit_suppressed:
                audit.warning("%d refused operator actions were not written to breaker-events (over %d per %.0fs)",
                              self.audit_suppressed, AUDIT_MAX_PER_WINDOW, AUDIT_WINDOW_S)
            start, written, self.audit_suppressed = now, 0, 0
        if written >= AUDIT_MAX_PER_WINDOW:
            self.audit_suppressed += 1
            self._audit_window = (start, written)
            return
        self._audit_window = (start, written + 1)
        try:
            await self.audit(record)
        except Exception as exc:  # noqa: BLE001 - the refusal stands; the failure is logged
            audit.error("writing a refused operator action to breaker-events failed: %s", type(exc).__name__)

    async def _action(self, op: Operator | None, kind: str | None, raw_scope: str, action: str,
                      body: bytes) -> Reply:
        if kind is None:
            return _err(404, f"unknown action {action[:64]!r}")
        if op is None:
            return Reply(401, {"error": "unauthorized: bearer token required"}, {"WWW-Authenticate": "Bearer"})
        if not can(op, kind):
            return _err(403, f"forbidden: role {op.role.name} may not {action}")
        if len(body) > MAX_BODY_BYTES:
            return _err(413, "body too large")
        try:
            doc = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            return _err(400, "body must be JSON: {\"reason\": \"...\"}")
        if not isinstance(doc, dict):
            return _err(400, "body must be a JSON object")
        try:
            scope = self.monitor.policy.input_scope(raw_scope)  # the route decoded the path once
        except ScopeError as exc:
            return _err(400, f"invalid scope: {exc}")
        try:
            reason = validate_reason(doc.get("reason"))
        except ValueError as exc:
            return _err(400, str(exc))
        mon = self.monitor
        now = mon.clock.now()
        policy = mon.policy
        current = mon.states.get(scope) or BreakerState.initial(scope, now, policy)
        try:
            if kind == "force_open":
                new, transitions = force_open(current, op.name, reason, now, policy.policy_version)
            elif kind == "reset":
                new, transitions = reset(current, op.name, reason, now, policy.policy_version)
            else:
                ttl = approval_ttl(doc.get("ttl_s"), policy.approvals.default_ttl, policy.approvals.max_ttl)
                new, transitions = approve(current, op.name, reason, now, ttl, policy.approvals.max_ttl)
        except BreakerActionError as exc:
            return _err(409, str(exc), state=current.state)
        except ValueError as exc:
            return _err(400, str(exc))
        if kind == "reset":
            mon.note_reset(scope, now)
        mon.states[scope] = new
        for t in transitions:
            mon.transitions_total[(t.from_state, t.to_state)] += 1
        await self.publish(Change(new, transitions))
        # reason and scope escaped: an operator's newline never forges a log line
        audit.info("%s %s on %s by %s: %s", kind, "ok", ascii(scope), ascii(op.name), ascii(reason[:200]))
        return Reply(200, {"ok": True, "action": kind, "actor": op.name, "breaker": state_view(new, now),
                           "transitions": [t.to_dict() for t in transitions]})
