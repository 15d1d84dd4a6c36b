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
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from breakers.scope import ScopeError, format_scope, parse_scope
from streams.kafka.security import KafkaSecurity

log = logging.getLogger("tripwire.drill")

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"
DRILL_PREFIX = "drill-"
DEFAULT_SCOPE = "agent:drill-bot/tool:shell"
STEPS = ("detection", "breaker_open", "authz_deny", "alert_fired", "reset", "closed", "authz_allow",
         "stays_closed", "alert_resolved")
#: the record key of drill results on breaker-events (one partition holds them all)
RESULT_KEY = b"drill"


class DrillError(RuntimeError):
    """The drill cannot start (bad scope, unreachable broker, ...)."""


# ---------------------------------------------------------------------------------- config

class DrillSLO(BaseSettings):
    """Step SLOs in seconds; env ``TRIPWIRE_DRILL_SLO_OPEN_S`` etc., or a YAML file (``--slo-file``)."""

    model_config = SettingsConfigDict(env_prefix="TRIPWIRE_DRILL_SLO_", extra="forbid")

    open_s: float = Field(10.0, gt=0, description="spike start → breaker open (and detection)")
    deny_s: float = Field(1.0, gt=0, description="breaker open → authz denies")
    alert_s: float = Field(30.0, gt=0, description="breaker open → alert in Alertmanager; reset → resolved")
    recovery_s: float = Field(10.0, gt=0, description="reset → closed on breaker-state and authz allows")
    grace_s: float = Field(5.0, ge=0, description="keep waiting this long past an SLO to report the real time")
    settle_s: float = Field(6.0, ge=0, description="reset no earlier than this after the spike (workers evaluate "
                            "good-only events every 5 s), and watch this long after recovery that it stays closed")

    @classmethod
    def load(cls, file: Path | None = None, **overrides: float | None) -> "DrillSLO":
        """Defaults < YAML file (top level or under ``drill_slo:``) < env < explicit overrides."""
        data: dict[str, Any] = {}
        if file is not None:
            doc = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
            if not isinstance(doc, dict):
                raise DrillError(f"{file}: expected a mapping of SLOs")
            data = dict(doc.get("drill_slo", doc))
        env = cls()
        for name in cls.model_fields:
            if name in env.model_fields_set:
                data[name] = getattr(env, name)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


class Topics(BaseModel):
    """Topic names the drill talks to (the deployment's; defaults from ``TRIPWIRE_TOPICS__*``)."""

    traces: str = "agent-traces"
    breaker_state: str = "breaker-state"
    breaker_events: str = "breaker-events"


@dataclass(frozen=True)
class DrillScope:
    """The breaker scope under drill and the identifiers its traffic uses."""

    scope: str
    agent: str
    tool: str
    tenant: str | None
    generated: bool  # the agent id got a fresh per-run suffix

    @property
    def agent_scope(self) -> str:
        return format_scope(self.tenant, self.agent, None)


def drill_scope(explicit: str | None, drill_id: str, prefix: str = DRILL_PREFIX) -> DrillScope:
    """The scope to drill: ``explicit`` as given, else the default with a fresh agent suffix.

    >>> drill_scope(None, "ab12cd").scope
    'agent:drill-bot-ab12cd/tool:shell'
    >>> drill_scope("agent:drill-x/tool:db.write", "z").agent
    'drill-x'
    """
    text = explicit or DEFAULT_SCOPE
    try:
        s = parse_scope(text)
    except ScopeError as exc:
        raise DrillError(f"invalid --scope {text!r}: {exc}") from None
    if s.agent is None or s.tool is None:
        raise DrillError(f"--scope must name an agent and a tool (agent:{prefix}…/tool:…), got {text!r}")
    agent = s.agent if explicit else f"{s.agent}-{drill_id[:6]}"
    if not agent.startswith(prefix):
        raise DrillError(f"refusing to drill {text!r}: drill agent ids must start with {prefix!r} so the "
                         "traffic stays away from production budgets")
    return DrillScope(format_scope(s.tenant, agent, s.tool), agent, s.tool, s.tenant, explicit is None)


def find_token(explicit: str | None, env: dict[str, str], data_dir: Path = Path(".tripwire")) -> str | None:
    """Operator token: ``--token`` > env ``TRIPWIRE_TOKEN`` > ``<data_dir>/admin.token`` (written by ``tripwire up``)."""
    if explicit:
        return explicit.strip()
    if env.get("TRIPWIRE_TOKEN", "").strip():
        return env["TRIPWIRE_TOKEN"].strip()
    path = data_dir / "admin.token"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


# ---------------------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class Profile:
    """What traffic a drill injects and what the breaker must do about it."""

    name: str
    description: str
    expect_state: str  # escalated | open | shadow
    enforces: bool  # authz must deny the drill tool
    pages: bool  # an alert must reach Alertmanager
    agent_scope: bool  # the watched scope is agent:<id> rather than agent:<id>/tool:<t>
    build: Callable[[DrillScope, str, float], list[dict[str, Any]]]


def _event(ds: DrillScope, drill_id: str, n: int, ts: float, kind: str, **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"schema_version": "1", "event_id": f"{drill_id}-{n}", "ts": int(ts * 1000),
                          "agent_id": ds.agent, "kind": kind, "drill_id": drill_id, **fields}
    if ds.tenant:
        ev["tenant"] = ds.tenant
    return ev


def _near_miss_spike(ds: DrillScope, drill_id: str, now: float) -> list[dict[str, Any]]:
    """40 calls, 16 high-severity flags: weighted rate 2.0/call = 20× the 0.10 objective (> 14.4×)."""
    out = []
    for i in range(40):
        call_id = f"{drill_id}-call-{i}"
        out.append(_event(ds, drill_id, len(out), now, "tool_call", tool=ds.tool, tool_call_id=call_id,
                          status="ok", latency_ms=120.0))
        if i % 5 in (1, 3):
            out.append(_event(ds, drill_id, len(out), now, "monitor_flag", tool=ds.tool, tool_call_id=call_id,
                              severity="high", monitor="tripwire-drill", action="blocked"))
    return out


def _incident_burst(ds: DrillScope, drill_id: str, now: float) -> list[dict[str, Any]]:
    """220 calls, 12 critical incidents: 5.5% of >= 200 calls in 1h (> 2%)."""
    out = []
    for i in range(220):
        call_id = f"{drill_id}-call-{i}"
        out.append(_event(ds, drill_id, len(out), now, "tool_call", tool=ds.tool, tool_call_id=call_id,
                          status="ok", latency_ms=80.0))
        if i % 18 == 17:
            out.append(_event(ds, drill_id, len(out), now, "incident", tool=ds.tool, tool_call_id=call_id,
                              severity="critical", monitor="tripwire-drill"))
    return out


def _drift(ds: DrillScope, drill_id: str, now: float) -> list[dict[str, Any]]:
    """Tool latency jumps 50× half-way (ADWIN drift) with one low flag as corroboration."""
    out = []
    n = 1200
    for i in range(n):
        base = 40.0 if i < n // 2 else 2000.0
        jitter = 1.0 + 0.2 * math.sin(i * 1.7)  # deterministic spread
        ts = now - (n - i) * 0.05
        out.append(_event(ds, drill_id, len(out), ts, "tool_call", tool=ds.tool, status="ok",
                          latency_ms=round(base * jitter, 3)))
    out.append(_event(ds, drill_id, len(out), now, "monitor_flag", tool=ds.tool, severity="low",
                      monitor="tripwire-drill", action="warned"))
    return out


PROFILES: dict[str, Profile] = {
    "near-miss-spike": Profile("near-miss-spike", "severity-weighted near-miss burn → escalated", "escalated",
                               True, True, False, _near_miss_spike),
    "incident-burst": Profile("incident-burst", "critical incidents > 2% of >= 200 calls in 1h → open", "open",
                              True, True, False, _incident_burst),
    "drift": Profile("drift", "tool-latency drift + a flag → shadow (reported, never enforced)", "shadow",
                     False, False, True, _drift),
}


# ---------------------------------------------------------------------------------- results

@dataclass
class StepResult:
    """One drill step's outcome."""

    name: str
    status: str = FAIL
    seconds: float | None = None
    slo_s: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status,
                "seconds": None if self.seconds is None else round(self.seconds, 3),
                "slo_s": self.slo_s, "detail": self.detail}


@dataclass
class DrillResult:
    """Everything a drill report shows."""

    drill_id: str
    scope: str
    agent: str
    profile: str
    expect_state: str
    started_at: float
    finished_at: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)
    slo: dict[str, float] = field(default_factory=dict)
    chaos: dict[str, Any] = field(default_factory=dict)
    events_sent: int = 0
    reported: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(s.status != FAIL for s in self.steps)

    @property
    def result(self) -> str:
        return "pass" if self.passed else "fail"

    def failed_steps(self) -> list[str]:
        return [s.name for s in self.steps if s.status == FAIL]

    def step(self, name: str) -> StepResult:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "drill_result", "drill_id": self.drill_id, "scope": self.scope, "agent": self.agent,
                "profile": self.profile, "expect_state": self.expect_state, "result": self.result,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "failed_steps": self.failed_steps(), "steps": [s.to_dict() for s in self.steps],
                "targets": self.targets, "slo": self.slo, "chaos": self.chaos, "events_sent": self.events_sent,
                "reported": self.reported}


# ---------------------------------------------------------------------------------- observers

@dataclass
class Seen:
    """A record observed on a topic, with the wall time the drill saw it."""

    topic: str
    value: dict[str, Any]
    seen_at: float


class TopicWatcher:
    """Follow ``breaker-state`` and ``breaker-events`` from their current end (kafka-python, a thread)."""

    def __init__(self, bootstrap: str, topics: list[str], timeout_s: float = 15.0,
                 security: KafkaSecurity | None = None) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.records: list[Seen] = []
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                       client_id="tripwire-drill", request_timeout_ms=int(timeout_s * 1000) + 1000,
                                       **(security or KafkaSecurity()).kafka_python_kwargs())
        tps = []
        deadline = time.monotonic() + timeout_s
        for topic in topics:
            parts = self._consumer.partitions_for_topic(topic)
            while not parts and time.monotonic() < deadline:
                time.sleep(0.2)
                self._consumer.topics()
                parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                self._consumer.close()
                raise DrillError(f"topic {topic!r} not found on the broker")
            tps.extend(TopicPartition(topic, p) for p in parts)
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before any drill traffic is sent
            self._consumer.position(tp)
        self._thread = threading.Thread(target=self._run, name="drill-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batches = self._consumer.poll(timeout_ms=100)
            except Exception as exc:  # noqa: BLE001 - reported on the step that needed it
                self.error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.5)
                continue
            now = time.time()
            for tp, recs in batches.items():
                for rec in recs:
                    if rec.value is None:
                        continue
                    try:
                        value = orjson.loads(rec.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(value, dict):
                        with self._lock:
                            self.records.append(Seen(tp.topic, value, now))

    def find(self, topic: str, pred: Callable[[dict[str, Any]], bool]) -> Seen | None:
        with self._lock:
            for rec in self.records:
                if rec.topic == topic and pred(rec.value):
                    return rec
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def _wait(pred: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``pred`` until truthy (returned) or ``timeout`` (None). Exceptions count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = pred()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# ---------------------------------------------------------------------------------- the drill

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
            producer.send_batch(self.ds.agent, events[i:i + 20])
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
            state = _wait(opened, max(0.0, spike_at + wait_open - time.time()))
            trans = watcher.find(cfg.topics.breaker_events,
                                 lambda v: v.get("type") == "transition" and v.get("scope") == scope
                                 and v.get("to") == expect)
            open_at = state.seen_at if state else None
            decided_at = float(trans.value["ts"]) if trans else None
        else:
            got = _wait(lambda: (s := self._state_via_api(scope)) and s.get("state") == expect and s,
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

        got_at = _wait(lambda: authz_is(want) and time.time(), slo.deny_s + slo.grace_s)
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

            at = _wait(alerted, max(0.0, since_open + slo.alert_s + slo.grace_s - time.time()), interval=0.25)
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
            seen = _wait(lambda: watcher.find(cfg.topics.breaker_state, lambda v: v.get("scope") == scope
                                              and v.get("state") == "closed"
                                              and v.get("actor") != "tripwire"), wait)
            closed_at = seen.seen_at if seen else None
        else:
            got = _wait(lambda: (s := self._state_via_api(scope)) and s.get("state") == "closed", wait, 0.1)
            closed_at = time.time() if got else None
        self._timed("closed", slo.recovery_s, reset_at, closed_at, "closed seen on breaker-state", wait)
        last: dict[str, Any] = {}

        def allowed() -> float | None:
            r = self._authz()
            last.update(status=r.status_code, state=r.headers.get("X-Tripwire-State"))
            return time.time() if r.status_code == 200 else None

        at = _wait(allowed, max(0.0, reset_at + wait - time.time()))
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
            at = _wait(lambda: not self._alerts() and time.time(),
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


# ---------------------------------------------------------------------------------- reporting to the deployment

def report_result(result: DrillResult, bootstrap: str, events_topic: str, api: str, token: str | None,
                  security: KafkaSecurity | None = None) -> None:
    """Tell the deployment: ``POST /v1/drills`` and a ``drill_result`` record on ``breaker-events``.

    Fills ``result.reported`` with ``ok`` or the error of each channel; never raises.
    """
    from streams.kafka.producer import check_broker

    from kafka import KafkaProducer

    doc = result.to_dict()
    try:
        check_broker(bootstrap, security or KafkaSecurity())
        producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="tripwire-drill", acks=1,
                                 max_block_ms=10_000, request_timeout_ms=10_000,
                                 **(security or KafkaSecurity()).kafka_python_kwargs())
        try:  # partition 0: where every worker looks for drill results (streams.worker.http.drills)
            producer.send(events_topic, key=RESULT_KEY, value=orjson.dumps(doc), partition=0).get(timeout=10)
        finally:
            producer.close(timeout=5)
        result.reported["breaker_events"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        result.reported["breaker_events"] = f"{type(exc).__name__}: {exc}"[:300]
    if not token:
        result.reported["api"] = "no operator token"
        return
    try:
        r = httpx.post(f"{api.rstrip('/')}/v1/drills", json=doc, headers={"Authorization": f"Bearer {token}"},
                       timeout=5)
        result.reported["api"] = "ok" if r.status_code in (200, 201) else f"HTTP {r.status_code}: {r.text[:200]}"
    except httpx.HTTPError as exc:
        result.reported["api"] = f"{type(exc).__name__}: {exc}"[:300]


__all__ = ["DEFAULT_SCOPE", "PROFILES", "Drill", "DrillConfig", "DrillError", "DrillResult", "DrillSLO",
           "StepResult", "Topics", "drill_scope", "find_token", "report_result"]
