"""Circuit-breaker drills: inject tagged traffic for a drill scope and time every step.

A drill proves, against a running deployment, that the whole loop works: traces in →
detectors → breaker decision → ``breaker-state`` → gateway authz → Alertmanager page →
operator reset → recovery. Steps (each PASS / FAIL / SKIPPED against an SLO):

=================  ==================================================================  ==============
step               measured                                                            SLO (default)
=================  ==================================================================  ==============
``detection``      spike start → the worker's decision (transition on breaker-events)  open_s (10 s)
``breaker_open``   spike start → the expected state seen on ``breaker-state``          open_s (10 s)
``authz_deny``     breaker open → ``GET /v1/authz`` answers 403 for the drill scope    deny_s (1 s)
``alert_fired``    breaker open → Alertmanager lists the alert (label drill="true")    alert_s (30 s)
``reset``          operator reset accepted (``POST /v1/breakers/{scope}/reset``)        —
``closed``         reset → ``closed`` seen on ``breaker-state``                         recovery_s (10 s)
``authz_allow``    reset → ``GET /v1/authz`` answers 200 again                          recovery_s (10 s)
``stays_closed``   no breaker of the drill agent re-trips for settle_s after the reset   settle_s (6 s)
``alert_resolved`` reset → the alert is no longer active in Alertmanager               alert_s (30 s)
=================  ==================================================================  ==============

A step that finishes after its SLO (but within the grace period) FAILs with its time; one that
never finishes FAILs as timed out. Alert steps are SKIPPED when no Alertmanager URL is given,
and for profiles whose breaker state never pages (``drift`` → ``shadow``).

Drill traffic carries ``drill_id`` and uses an agent id starting with the policy's drill prefix
(``drill-``): the Monitor never counts it for cross-agent scopes, its alerts carry
``drill="true"``, and production agents' budgets are untouched.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from breakers.scope import ScopeError, parse_scope
from streams.emitter.client import signature_headers
from streams.kafka.security import KafkaSecurity
from streams.ops.drill_config import DEFAULT_SCOPE, DRILL_PREFIX, DrillError, DrillScope, drill_scope, find_token
from streams.ops.drill_profiles import PROFILES, Profile
from streams.ops.drill_publish import RESULT_KEY, report_result
from streams.ops.drill_result import FAIL, PASS, SKIPPED, STEPS, DrillResult, StepResult
from streams.ops.drill_watch import Seen, TopicWatcher, poll_until
from streams.settings import DrillSLO, Topics

log = logging.getLogger("tripwire.drill")


@dataclass
class DrillConfig:
    """Where the deployment is and what to drill."""

    bootstrap: str
    api: str
    alertmanager: str | None = None
    scope: str | None = None
    profile: str = "near-miss-spike"
    token: str | None = None
    topics: Topics = field(default_factory=Topics)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    slo: DrillSLO = field(default_factory=DrillSLO)
    drill_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: the deployment's ``drill_key_id`` and its secret: drill traffic is signed with it (None: unsigned)
    signing_key_id: str | None = None
    signing_key: bytes | None = field(default=None, repr=False)


Hook = Callable[["Drill", str], None]


class Drill:
    """Run one drill; ``on_step(name, result)`` is called as each step finishes.

    ``hooks`` (chaos) are called at phase boundaries: ``after_spike`` (right after the traffic
    was sent) and ``before_recovery``; they may change :attr:`api` (e.g. to a surviving worker).
    """

    def __init__(self, config: DrillConfig, on_step: Callable[[StepResult], None] | None = None,
                 on_phase: Callable[[str], None] | None = None, hooks: dict[str, Hook] | None = None) -> None:
        if config.profile not in PROFILES:
            raise DrillError(f"unknown profile {config.profile!r}; choose from {', '.join(PROFILES)}")
        self.config = config
        self.profile = PROFILES[config.profile]
        self.ds = drill_scope(config.scope, config.drill_id)
        self.watch_scope = self.ds.agent_scope if self.profile.agent_scope else self.ds.scope
        self.api = config.api.rstrip("/")
        self.on_step = on_step or (lambda s: None)
        self.on_phase = on_phase or (lambda p: None)
        self.hooks = hooks or {}
        self.http = httpx.Client(timeout=3.0)
        slo = config.slo
        self.result = DrillResult(config.drill_id, self.watch_scope, self.ds.agent, self.profile.name,
                                  self.profile.expect_state, time.time(),
                                  targets={"broker": config.bootstrap, "api": self.api,
                                           "alertmanager": config.alertmanager},
                                  slo={"open_s": slo.open_s, "deny_s": slo.deny_s, "alert_s": slo.alert_s,
                                       "recovery_s": slo.recovery_s, "settle_s": slo.settle_s})

    # ------------------------------------------------------------------ helpers
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}

    def _record(self, step: StepResult) -> StepResult:
        self.result.steps.append(step)
        self.on_step(step)
        return step

    def _timed(self, name: str, slo: float, since: float | None, at: float | None, what: str,
               waited: float) -> StepResult:
        if since is None:
            return self._record(StepResult(name, FAIL, None, slo, f"not measured: {what} had no start"))
        if at is None:
            return self._record(StepResult(name, FAIL, None, slo, f"timed out after {waited:.1f}s waiting for {what}"))
        took = max(0.0, at - since)
        ok = took <= slo
        return self._record(StepResult(name, PASS if ok else FAIL, took, slo,
                                       what if ok else f"{what} took {took:.2f}s, over the {slo:g}s SLO"))

    def _authz(self) -> httpx.Response:
        h = {"X-Agent-Id": self.ds.agent, "X-Tool": self.ds.tool}
        if self.ds.tenant:
            h["X-Tenant"] = self.ds.tenant
        return self.http.get(f"{self.api}/v1/authz", headers=h)

    def _alerts(self) -> list[dict[str, Any]]:
        assert self.config.alertmanager
        r = self.http.get(f"{self.config.alertmanager.rstrip('/')}/api/v2/alerts",
                          params=[("filter", f'scope="{self.watch_scope}"'), ("active", "true")])
        r.raise_for_status()
        now = time.time()
        out = []
        for a in r.json():
            if a.get("labels", {}).get("scope") != self.watch_scope:
                continue
            if (a.get("status") or {}).get("state") == "active" or _rfc3339(a.get("endsAt")) > now:
                out.append(a)
        return out

    def _state_via_api(self, scope: str) -> dict[str, Any] | None:
        r = self.http.get(f"{self.api}/v1/breakers/{quote(scope, safe='')}", headers=self._headers())
        return r.json() if r.status_code == 200 else None

    # ------------------------------------------------------------------ run
    def run(self) -> DrillResult:
        """Inject, observe, recover; returns the result (never raises for a failing step)."""
        from streams.kafka.producer import BrokerUnreachable, TraceProducer

        cfg, res = self.config, self.result
        self.on_phase("connecting")
        try:
            watcher: TopicWatcher | None = TopicWatcher(cfg.bootstrap, [cfg.topics.breaker_state,
                                                                        cfg.topics.breaker_events],
                                                        security=cfg.security)
        except Exception as exc:  # noqa: BLE001 - fall back to polling the API
            log.warning("cannot follow breaker topics (%s); polling %s instead", exc, self.api)
            watcher = None
        self.result.targets["observed_via"] = "breaker-state topic" if watcher else "API polling (fallback)"
        try:
            producer = TraceProducer(cfg.bootstrap, cfg.topics.traces, security=cfg.security)
        except BrokerUnreachable as exc:
            if watcher:
                watcher.close()
            raise DrillError(str(exc)) from None
        try:
            self._run(watcher, producer)
        finally:
            producer.close()
            if watcher:
                watcher.close()
            self.http.close()
        res.finished_at = time.time()
        return res

    def _run(self, watcher: TopicWatcher | None, producer: Any) -> None:
        cfg, slo, res, prof = self.config, self.config.slo, self.result, self.profile
        scope = self.watch_scope
        self.on_phase(f"injecting {prof.name} traffic for {scope}")
        spike_at = time.time()
        events = prof.build(self.ds, cfg.drill_id, spike_at)
        for i in range(0, len(events), 20):
            batch = events[i:i + 20]
            if cfg.signing_key is not None and cfg.signing_key_id:
                value = orjson.dumps(batch)  # the worker attests drill traffic only when signed with the drill key
                producer.send_raw(self.ds.agent.encode(), value,
                                  signature_headers(value, cfg.signing_key, cfg.signing_key_id))
                producer.sent_events += len(batch)
            else:
                producer.send_batch(self.ds.agent, batch)
        producer.flush()
        res.events_sent = len(events)
        res.chaos.setdefault("spike_started_at", spike_at)
        if "after_spike" in self.hooks:
            self.hooks["after_spike"](self, "after_spike")
        hooks_done = time.time()

        # detection + open
        self.on_phase(f"waiting for {scope} to become {prof.expect_state}")
        wait_open = slo.open_s + slo.grace_s
        expect = prof.expect_state
        trans = state = None
        if watcher is not None:
            def opened() -> Seen | None:
                return watcher.find(cfg.topics.breaker_state,
                                    lambda v: v.get("scope") == scope and v.get("state") == expect)
            state = poll_until(opened, max(0.0, spike_at + wait_open - time.time()))
            trans = watcher.find(cfg.topics.breaker_events,
                                 lambda v: v.get("type") == "transition" and v.get("scope") == scope
                                 and v.get("to") == expect)
            open_at = state.seen_at if state else None
            decided_at = float(trans.value["ts"]) if trans else None
        else:
            got = poll_until(lambda: (s := self._state_via_api(scope)) and s.get("state") == expect and s,
                        max(0.0, spike_at + wait_open - time.time()), interval=0.1)
            open_at = time.time() if got else None
            decided_at = float(got["since"]) if got else None
        self._timed("detection", slo.open_s, spike_at, decided_at,
                    f"decision: {scope} → {expect}" + (f" ({trans.value.get('reason', '')[:120]})" if trans else ""),
                    wait_open)
        self._timed("breaker_open", slo.open_s, spike_at, open_at, f"{expect} seen on breaker-state", wait_open)
        # the deny clock starts when the drill could first ask (a chaos hook may have run past the open)
        since_open = max(open_at, hooks_done) if open_at is not None else time.time()

        # authz
        want = 403 if prof.enforces else 200
        self.on_phase("polling /v1/authz")
        last: dict[str, Any] = {}

        def authz_is(code: int) -> bool:
            r = self._authz()
            last.update(status=r.status_code, state=r.headers.get("X-Tripwire-State"),
                        reason=r.headers.get("X-Tripwire-Reason"))
            return r.status_code == code and (code == 403 or r.headers.get("X-Tripwire-State") == expect
                                              or not prof.agent_scope)

        got_at = poll_until(lambda: authz_is(want) and time.time(), slo.deny_s + slo.grace_s)
        step = self._timed("authz_deny", slo.deny_s, since_open, got_at,
                           f"/v1/authz answered {want}" + (f" ({last.get('state')})" if last else ""),
                           slo.deny_s + slo.grace_s)
        if got_at is None and last:
            step.detail += f"; last answer {last.get('status')} state={last.get('state')} reason={last.get('reason')}"
            if last.get("status") == 200 and last.get("state") == "escalated":
                step.detail += f"; tool {self.ds.tool!r} is not consequential in the deployment's policy"
        elif got_at is None:
            step.detail += f"; {self.api}/v1/authz did not answer"

        # alert
        if not cfg.alertmanager:
            self._record(StepResult("alert_fired", SKIPPED, None, slo.alert_s, "no --alertmanager given"))
        elif not prof.pages:
            self._record(StepResult("alert_fired", SKIPPED, None, slo.alert_s, f"{expect} does not page"))
        else:
            self.on_phase("waiting for the alert in Alertmanager")
            found: dict[str, Any] = {}

            def alerted() -> float | None:
                alerts = self._alerts()
                if alerts:
                    found.update(alerts[0].get("labels", {}))
                    return time.time()
                return None

            at = poll_until(alerted, max(0.0, since_open + slo.alert_s + slo.grace_s - time.time()), interval=0.25)
            step = self._timed("alert_fired", slo.alert_s, since_open, at,
                               f"alert {found.get('alertname', '')} for {scope}", slo.alert_s + slo.grace_s)
            if at is not None and found.get("drill") != "true":
                step.status, step.detail = FAIL, f"alert is not labelled drill=\"true\": {found}"

        if "before_recovery" in self.hooks:
            self.hooks["before_recovery"](self, "before_recovery")
        # a chaos hook that restarted the (memory-only) broker leaves the topic watcher's offsets
        # pointing past the recreated topics: recover through the API then
        self._recover(None if self.result.chaos.get("watcher_stale") else watcher)

    def _recover(self, watcher: TopicWatcher | None) -> None:
        cfg, slo, prof = self.config, self.config.slo, self.profile
        scope = self.watch_scope
        settle_until = self.result.chaos.get("spike_started_at", 0.0) + slo.settle_s
        if time.time() < settle_until:  # let the worker finish evaluating the spike, or it re-trips after the reset
            self.on_phase("letting the worker finish evaluating the spike")
            time.sleep(settle_until - time.time())
        self.on_phase("resetting the drill scopes")
        reset_at = time.time()
        reset_ok = False
        if not cfg.token:
            self._record(StepResult("reset", FAIL, None, None,
                                    "no operator token: pass --token, set TRIPWIRE_TOKEN or write .tripwire/admin.token"))
        else:
            scopes = self._scopes_to_reset()
            errors = []
            for s in scopes:
                try:
                    r = self.http.post(f"{self.api}/v1/breakers/{quote(s, safe='')}/reset", headers=self._headers(),
                                       json={"reason": f"tripwire drill {cfg.drill_id}: recovery"})
                    if r.status_code != 200:
                        errors.append(f"{s}: HTTP {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(f"{s}: {type(exc).__name__}: {exc}")
            reset_ok = not errors
            self._record(StepResult("reset", PASS if reset_ok else FAIL, time.time() - reset_at, None,
                                    f"reset {', '.join(scopes)}" if reset_ok else "; ".join(errors)[:600]))
        if not reset_ok:
            for name in ("closed", "authz_allow", "stays_closed"):
                self._record(StepResult(name, FAIL, None, slo.recovery_s, "not reached: the reset failed"))
            if cfg.alertmanager and prof.pages:
                self._record(StepResult("alert_resolved", FAIL, None, slo.alert_s, "not reached: the reset failed"))
            else:
                self._record(StepResult("alert_resolved", SKIPPED, None, slo.alert_s,
                                        "no --alertmanager given" if not cfg.alertmanager else "nothing paged"))
            return
        self.on_phase("waiting for recovery")
        wait = slo.recovery_s + slo.grace_s
        if watcher is not None:
            seen = poll_until(lambda: watcher.find(cfg.topics.breaker_state, lambda v: v.get("scope") == scope
                                              and v.get("state") == "closed"
                                              and v.get("actor") != "tripwire"), wait)
            closed_at = seen.seen_at if seen else None
        else:
            got = poll_until(lambda: (s := self._state_via_api(scope)) and s.get("state") == "closed", wait, 0.1)
            closed_at = time.time() if got else None
        self._timed("closed", slo.recovery_s, reset_at, closed_at, "closed seen on breaker-state", wait)
        last: dict[str, Any] = {}

        def allowed() -> float | None:
            r = self._authz()
            last.update(status=r.status_code, state=r.headers.get("X-Tripwire-State"))
            return time.time() if r.status_code == 200 else None

        at = poll_until(allowed, max(0.0, reset_at + wait - time.time()))
        step = self._timed("authz_allow", slo.recovery_s, reset_at, at, "/v1/authz answered 200", wait)
        if at is None and last:
            step.detail += f"; last answer {last.get('status')} state={last.get('state')}"
        self._stays_closed(watcher, at)
        if not cfg.alertmanager:
            self._record(StepResult("alert_resolved", SKIPPED, None, slo.alert_s, "no --alertmanager given"))
        elif not prof.pages:
            self._record(StepResult("alert_resolved", SKIPPED, None, slo.alert_s, f"{prof.expect_state} does not page"))
        else:
            self.on_phase("waiting for the alert to resolve")
            at = poll_until(lambda: not self._alerts() and time.time(),
                       max(0.0, reset_at + slo.alert_s + slo.grace_s - time.time()), interval=0.25)
            self._timed("alert_resolved", slo.alert_s, reset_at, at, "alert no longer active",
                        slo.alert_s + slo.grace_s)

    def _stays_closed(self, watcher: TopicWatcher | None, allowed_at: float | None) -> None:
        """After recovery no scope of the drill agent may re-trip (e.g. a pending evaluation of the spike)."""
        slo = self.config.slo
        if allowed_at is None:
            self._record(StepResult("stays_closed", FAIL, None, slo.settle_s, "not reached: authz never allowed"))
            return
        self.on_phase(f"checking that the breaker stays closed for {slo.settle_s:g}s")
        mine = (self.ds.scope, self.ds.agent_scope, self.watch_scope)
        retrip = None
        deadline = allowed_at + slo.settle_s
        while time.time() < deadline and retrip is None:
            time.sleep(0.2)
            if watcher is not None:
                retrip = watcher.find(self.config.topics.breaker_state, lambda v: v.get("scope") in mine
                                      and v.get("state") not in ("closed", "shadow")
                                      and float(v.get("updated_at") or 0) > allowed_at - 0.5
                                      and v.get("actor") == "tripwire")
        try:
            denied = self._authz().status_code != 200
        except httpx.HTTPError as exc:
            self._record(StepResult("stays_closed", FAIL, None, slo.settle_s, f"authz unreachable: {exc}"))
            return
        if retrip is not None or denied:
            why = (f"{retrip.value.get('scope')} went {retrip.value.get('state')} again: "
                   f"{str(retrip.value.get('reason'))[:150]}") if retrip else "authz denies again"
            self._record(StepResult("stays_closed", FAIL, None, slo.settle_s, why))
        else:
            self._record(StepResult("stays_closed", PASS, slo.settle_s, slo.settle_s,
                                    f"closed and allowed for {slo.settle_s:g}s"))

    def _scopes_to_reset(self) -> list[str]:
        """The watched scope plus every other non-closed scope of the drill agent (authz checks them all)."""
        out = [self.watch_scope]
        try:
            r = self.http.get(f"{self.api}/v1/breakers", headers=self._headers())
            items = r.json().get("breakers", []) if r.status_code == 200 else []
        except (httpx.HTTPError, ValueError):
            items = []
        for b in items:
            s = b.get("scope", "")
            try:
                agent = parse_scope(s).agent
            except ScopeError:
                continue
            if agent == self.ds.agent and b.get("state") != "closed" and s not in out:
                out.append(s)
        for s in (self.ds.scope, self.ds.agent_scope):  # expected companions, even if not listed yet
            if s not in out and self.profile.expect_state != "shadow":
                out.append(s)
        return out


def _rfc3339(text: str | None) -> float:
    if not text:
        return 0.0
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


__all__ = ["DEFAULT_SCOPE", "DRILL_PREFIX", "FAIL", "PASS", "PROFILES", "RESULT_KEY", "SKIPPED", "STEPS", "Drill",
           "DrillConfig", "DrillError", "DrillResult", "DrillSLO", "DrillScope", "Profile", "Seen", "StepResult",
           "TopicWatcher", "Topics", "drill_scope", "find_token", "report_result"]
