"""Per-scope circuit-breaker state machine, as pure functions over :class:`BreakerState`.

States and moves (``actor`` is "tripwire" unless an operator acted)::

    closed/shadow/escalated --open budget fires------------------> open
    closed/shadow           --escalate budget fires--------------> escalated
    closed                  --shadow budget fires----------------> shadow
    open      --cool-down over, no open budget fires-------------> half_open (N probes)
    open      --cool-down over, open budget still fires----------> open (cool-down × backoff, capped)
    half_open --a probe fails, or an open budget fires-----------> open (cool-down × backoff, capped)
    half_open --N clean probes and no open budget fires----------> closed (or escalated/shadow if those fire)
    escalated --no escalate/open budget fires for clear_after----> closed (or shadow)
    shadow    --no budget fires for clear_after------------------> closed
    any       --operator force_open------------------------------> forced_open (only reset leaves it)
    any       --operator reset-----------------------------------> closed
    escalated --operator approve---------------------------------> escalated (+ approval with expiry)

Anti-flapping: escalated and shadow need ``clear_after`` seconds of continuously clean verdicts
to close (hysteresis); open needs a cool-down plus N clean probes; re-opening within
``max_cooldown`` of closing continues the exponential back-off instead of starting over.

Nothing here reads a clock or does I/O: pass ``now``, epoch seconds of the *wall clock* (the engine
never passes event time, so a forged timestamp cannot end a cool-down, a probe deadline or an approval
early; the backtest passes its simulated wall). A function returns the
new state and the transitions to append to ``breaker-events``; publish the state to
``breaker-state`` whenever ``new != old`` (also without transitions, e.g. ``clean_since``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .evaluate import Verdict
from .operators import validate_reason
from .policy import Budget, Policy
from .scope import is_drill_scope

CLOSED, OPEN, HALF_OPEN, ESCALATED, FORCED_OPEN, SHADOW = (
    "closed", "open", "half_open", "escalated", "forced_open", "shadow")
STATES = (CLOSED, OPEN, HALF_OPEN, ESCALATED, FORCED_OPEN, SHADOW)
#: states in which a breaker restricts calls (shadow never enforces; closed allows)
ENFORCING = frozenset({OPEN, FORCED_OPEN, HALF_OPEN, ESCALATED})
#: states in which a breaker allows every call: the complement of :data:`ENFORCING`
ALLOWING = frozenset({CLOSED, SHADOW})
#: the actor of automatic moves (operators act under their own names)
TRIPWIRE = "tripwire"
_FALLBACK = Budget(name="fallback", signal="drift", scopes=["*"])  # defaults if a budget vanished


class BreakerActionError(ValueError):
    """An operator action that does not apply to the current state (HTTP 409)."""


@dataclass(slots=True)
class Approval:
    """An operator's approval for consequential tools of an escalated scope."""

    actor: str
    reason: str
    expires_at: float
    granted_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"actor": self.actor, "reason": self.reason, "expires_at": self.expires_at,
                "granted_at": self.granted_at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Approval":
        return cls(str(d["actor"]), str(d.get("reason", "")), float(d["expires_at"]),
                   float(d.get("granted_at", 0.0)))


@dataclass(slots=True)
class BreakerState:
    """The latest state of one scope (value of the compacted ``breaker-state`` topic)."""

    scope: str
    state: str = CLOSED
    since: float = 0.0
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    budget: str | None = None
    actor: str = TRIPWIRE
    cooldown_s: float = 0.0
    open_count: int = 0
    probes_required: int = 0
    probes_remaining: int = 0
    probes_ok: int = 0
    probe_deadline: float | None = None
    clean_since: float | None = None
    approvals: list[Approval] = field(default_factory=list)
    last_revoked_at: float | None = None
    policy_version: str = ""
    updated_at: float = 0.0
    drill: bool = False

    @classmethod
    def initial(cls, scope: str, now: float, policy: Policy | None = None) -> "BreakerState":
        """A fresh closed state for ``scope``."""
        prefix = policy.drill_prefix if policy else "drill-"
        return cls(scope=scope, since=now, updated_at=now, reason="initial",
                   policy_version=policy.policy_version if policy else "",
                   drill=is_drill_scope(scope, prefix))

    @property
    def reopens_at(self) -> float | None:
        """When an open breaker's cool-down ends (None unless open)."""
        return self.since + self.cooldown_s if self.state == OPEN else None

    def active_approval(self, now: float) -> Approval | None:
        """An unexpired approval, if any."""
        for a in self.approvals:
            if a.expires_at > now:
                return a
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (see README of breakers / module docs for the fields)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["approvals"] = [a.to_dict() for a in self.approvals]
        d["evidence"] = dict(self.evidence)
        d["schema"] = 1
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BreakerState":
        """Inverse of :meth:`to_dict`; unknown keys are ignored (forward compatibility)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("state", CLOSED) not in STATES:
            raise ValueError(f"unknown breaker state {kw.get('state')!r}")
        kw["approvals"] = [Approval.from_dict(a) for a in kw.get("approvals") or []]
        kw["evidence"] = dict(kw.get("evidence") or {})
        return cls(**kw)


@dataclass(slots=True)
class Transition:
    """One audited change (or operator action) — a ``breaker-events`` record."""

    scope: str
    from_state: str
    to_state: str
    action: str  # trip, escalate, shadow, half_open, close, clear, reopen, probe_failed, ...
    reason: str
    evidence: dict[str, Any]
    policy_version: str
    actor: str
    ts: float
    budget: str | None = None
    drill: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["from"] = d.pop("from_state")
        d["to"] = d.pop("to_state")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Transition":
        d = dict(d)
        d["from_state"] = d.pop("from")
        d["to_state"] = d.pop("to")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ------------------------------------------------------------------ helpers

def _verdict_evidence(v: Verdict) -> dict[str, Any]:
    return {"budget": v.budget, "signal": v.signal, "rule": v.rule, "severity": v.severity,
            "burn_rates": dict(v.burn_rates), "budget_remaining": v.budget_remaining,
            "counts": {k: dict(c) for k, c in v.evidence.items()}}


def _strongest(fired: Iterable[Verdict], action: str) -> Verdict | None:
    best: Verdict | None = None
    for v in fired:
        if v.action == action and (best is None or (v.severity == "page", max(v.burn_rates.values(), default=0))
                                   > (best.severity == "page", max(best.burn_rates.values(), default=0))):
            best = v
    return best


def _budget(policy: Policy, name: str | None) -> Budget:
    return policy.budget(name) or _FALLBACK


def _move(s: BreakerState, to: str, now: float, action: str, reason: str, evidence: dict[str, Any],
          policy_version: str, actor: str = TRIPWIRE, budget: str | None = None) -> Transition:
    """Mutate ``s`` (a private copy) into state ``to`` and return the Transition."""
    t = Transition(s.scope, s.state, to, action, reason, evidence, policy_version, actor, now,
                   budget if budget is not None else s.budget, s.drill)
    if to != s.state:
        s.since = now
        s.clean_since = None
    s.state, s.reason, s.evidence, s.actor = to, reason, evidence, actor
    s.policy_version, s.updated_at = policy_version, now
    if budget is not None:
        s.budget = budget
    return t


def _trip(s: BreakerState, v: Verdict | None, now: float, policy: Policy, reason: str,
          evidence: dict[str, Any] | None = None, action: str = "trip") -> Transition:
    """Open ``s``: revoke tokens, start (or back off) the cool-down."""
    b = _budget(policy, v.budget if v else s.budget)
    if s.state in (OPEN, HALF_OPEN):
        s.open_count += 1
    elif s.open_count > 0 and now - s.since < b.max_cooldown:
        s.open_count += 1  # re-tripped soon after recovering: keep backing off
    else:
        s.open_count = 1
    s.cooldown_s = b.cooldown_for(s.open_count)
    s.last_revoked_at = now
    s.probes_required = s.probes_remaining = s.probes_ok = 0
    s.probe_deadline = None
    s.approvals = []
    ev = evidence if evidence is not None else (_verdict_evidence(v) if v else {})
    ev = {**ev, "cooldown_s": s.cooldown_s, "open_count": s.open_count}
    return _move(s, OPEN, now, action, reason, ev, policy.policy_version, budget=v.budget if v else None)


# ------------------------------------------------------------------ automatic steps

def step(state: BreakerState, verdicts: Sequence[Verdict], now: float,
         policy: Policy) -> tuple[BreakerState, list[Transition]]:
    """Advance ``state`` given this evaluation's verdicts. Pure; ``state`` is not mutated."""
    s = dataclasses.replace(state, approvals=list(state.approvals), evidence=dict(state.evidence))
    out: list[Transition] = []
    expired = [a for a in s.approvals if a.expires_at <= now]
    if expired:
        s.approvals = [a for a in s.approvals if a.expires_at > now]
        s.updated_at = now
        out.append(Transition(s.scope, s.state, s.state, "approval_expired",
                              f"approval by {expired[0].actor} expired", {"expired": [a.to_dict() for a in expired]},
                              policy.policy_version, TRIPWIRE, now, s.budget, s.drill))
    if s.state == FORCED_OPEN:
        return s, out

    fired = [v for v in verdicts if v.fired]
    v_open = _strongest(fired, "open")
    v_esc = _strongest(fired, "escalate")
    v_shadow = _strongest(fired, "shadow")
    pv = policy.policy_version

    if s.state in (CLOSED, SHADOW, ESCALATED) and v_open:
        out.append(_trip(s, v_open, now, policy, v_open.reason))
    elif s.state in (CLOSED, SHADOW) and v_esc:
        out.append(_move(s, ESCALATED, now, "escalate", v_esc.reason, _verdict_evidence(v_esc), pv, budget=v_esc.budget))
    elif s.state == CLOSED and v_shadow:
        out.append(_move(s, SHADOW, now, "shadow", v_shadow.reason, _verdict_evidence(v_shadow), pv,
                         budget=v_shadow.budget))
    elif s.state in (SHADOW, ESCALATED):
        still = v_esc if s.state == ESCALATED else v_shadow
        if still is not None:
            if s.clean_since is not None:
                s.clean_since, s.updated_at = None, now
        elif s.clean_since is None:
            s.clean_since, s.updated_at = now, now
        elif now - s.clean_since >= _budget(policy, s.budget).clear_after:
            quiet = now - s.clean_since
            if v_shadow is not None and s.state == ESCALATED:
                out.append(_move(s, SHADOW, now, "clear", f"escalation clear for {quiet:.0f}s; {v_shadow.reason}",
                                 _verdict_evidence(v_shadow), pv, budget=v_shadow.budget))
            else:
                out.append(_move(s, CLOSED, now, "clear", f"no budget fired for {quiet:.0f}s", {}, pv))
                s.approvals = []
    elif s.state == OPEN:
        if now >= s.since + s.cooldown_s:
            if v_open is not None:
                out.append(_trip(s, v_open, now, policy, f"still firing after cool-down: {v_open.reason}",
                                 action="reopen"))
            else:
                b = _budget(policy, s.budget)
                s.probes_required = s.probes_remaining = b.half_open_probes
                s.probes_ok = 0
                s.probe_deadline = now + policy.probe_timeout
                out.append(_move(s, HALF_OPEN, now, "half_open",
                                 f"cool-down of {s.cooldown_s:.0f}s over; allowing {b.half_open_probes} probe calls",
                                 {"cooldown_s": s.cooldown_s, "probes": b.half_open_probes}, pv))
    elif s.state == HALF_OPEN:
        if v_open is not None:
            out.append(_trip(s, v_open, now, policy, f"fired during half-open: {v_open.reason}", action="reopen"))
        elif s.probes_ok >= s.probes_required:
            msg = f"{s.probes_ok} clean probe calls"
            if v_esc is not None:
                out.append(_move(s, ESCALATED, now, "escalate", f"{msg}; but {v_esc.reason}",
                                 _verdict_evidence(v_esc), pv, budget=v_esc.budget))
            elif v_shadow is not None:
                out.append(_move(s, SHADOW, now, "shadow", f"{msg}; {v_shadow.reason}",
                                 _verdict_evidence(v_shadow), pv, budget=v_shadow.budget))
            else:
                out.append(_move(s, CLOSED, now, "close", f"{msg}; no budget fires", {"probes_ok": s.probes_ok}, pv))
            s.probes_required = s.probes_remaining = s.probes_ok = 0
            s.probe_deadline = None
        elif s.probes_remaining == 0 and s.probe_deadline is not None and now >= s.probe_deadline:
            missing = s.probes_required - s.probes_ok
            s.probes_remaining = missing
            s.probe_deadline = now + policy.probe_timeout
            out.append(_move(s, HALF_OPEN, now, "probes_rearmed",
                             f"no result for {missing} probe calls within {policy.probe_timeout}s; re-arming",
                             {"probes_ok": s.probes_ok, "probes_rearmed": missing}, pv))
    return s, out


def settled(state: BreakerState, fired: frozenset[str] | set[str], now: float, policy: Policy) -> bool:
    """Would :func:`step` change nothing, given only the actions that fire (``open``/``escalate``/``shadow``)?

    What a screening evaluator asks before skipping the full evaluation of a scope: a step that
    changes nothing needs no verdict texts. Conservative: half-open answers False (probes).

    >>> from breakers.policy import parse_policy
    >>> p = parse_policy("budgets: [{name: nm, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.01}]")
    >>> settled(BreakerState("agent:a"), frozenset(), 0.0, p), settled(BreakerState("agent:a"), {"shadow"}, 0.0, p)
    (True, False)
    >>> settled(BreakerState("agent:a", SHADOW), {"shadow"}, 0.0, p)   # still firing, no quiet time running
    True
    """
    if any(a.expires_at <= now for a in state.approvals):
        return False
    kind = state.state
    if kind == FORCED_OPEN:
        return True
    if kind == HALF_OPEN:
        return False
    if "open" in fired and kind in (CLOSED, SHADOW, ESCALATED):
        return False
    if kind == CLOSED:
        return not fired
    if kind == SHADOW and "escalate" in fired:
        return False
    if kind in (SHADOW, ESCALATED):
        if ("escalate" if kind == ESCALATED else "shadow") in fired:
            return state.clean_since is None
        return state.clean_since is not None and now - state.clean_since < _budget(policy, state.budget).clear_after
    return now < state.since + state.cooldown_s  # open


def next_deadline(state: BreakerState, policy: Policy) -> float:
    """The earliest ``now`` at which :func:`step` can change ``state`` without its verdicts changing.

    Right after a step (or an operator action) the state is settled for its verdicts: stepping it
    again with the same verdicts changes nothing until a timer of the state runs out (an approval
    expiring, an open breaker's cool-down, escalated/shadow's ``clear_after`` of clean verdicts) —
    so an evaluator may skip a scope whose evidence did not change until then. Half-open is
    ``-inf`` (probe results arrive between evaluations: evaluate it every time); a closed or forced-open
    breaker without approvals has no timer (``inf``).

    >>> from breakers.policy import parse_policy
    >>> p = parse_policy("budgets: [{name: nm, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.01, cooldown: 5m}]")
    >>> next_deadline(BreakerState("agent:a", OPEN, since=1000.0, cooldown_s=300.0, budget="nm"), p)
    1300.0
    >>> next_deadline(BreakerState("agent:a", SHADOW, clean_since=1000.0, budget="nm"), p)  # clear_after 30 min
    2800.0
    >>> next_deadline(BreakerState("agent:a"), p)
    inf
    """
    at = min((a.expires_at for a in state.approvals), default=math.inf)
    kind = state.state
    if kind == HALF_OPEN:
        return -math.inf
    if kind == OPEN:
        return min(at, state.since + state.cooldown_s)
    if kind in (SHADOW, ESCALATED) and state.clean_since is not None:
        return min(at, state.clean_since + _budget(policy, state.budget).clear_after)
    return at


def probe(state: BreakerState, now: float) -> tuple[BreakerState, bool]:
    """Take one half-open probe slot: (new state, admitted?). Call when authz allowed a probe.

    Not half-open or no slot left → (state unchanged, False).
    """
    if state.state != HALF_OPEN or state.probes_remaining <= 0:
        return state, False
    return dataclasses.replace(state, probes_remaining=state.probes_remaining - 1, updated_at=now), True


def record_probe_result(state: BreakerState, ok: bool, now: float, policy: Policy,
                        reason: str = "", evidence: Mapping[str, Any] | None = None
                        ) -> tuple[BreakerState, list[Transition]]:
    """Record the outcome of a call made in half-open.

    ``ok=True`` counts a clean call (the next :func:`step` closes once ``probes_required`` are
    clean and no budget fires); ``ok=False`` (a flag, incident or error on the call) re-opens
    at once with back-off. Outside half_open this is a no-op.
    """
    if state.state != HALF_OPEN:
        return state, []
    s = dataclasses.replace(state, approvals=list(state.approvals), evidence=dict(state.evidence))
    if ok:
        s.probes_ok += 1
        s.updated_at = now
        return s, []
    why = f"probe call failed: {reason}" if reason else "probe call failed"
    ev = {"probe": dict(evidence or {}), "probes_ok": state.probes_ok}
    return s, [_trip(s, None, now, policy, why, ev, action="probe_failed")]


# ------------------------------------------------------------------ operator actions

def _operator_copy(state: BreakerState) -> BreakerState:
    return dataclasses.replace(state, approvals=list(state.approvals), evidence=dict(state.evidence))


def force_open(state: BreakerState, actor: str, reason: str, now: float,
               policy_version: str | None = None) -> tuple[BreakerState, list[Transition]]:
    """Manual kill switch: any state → forced_open (revokes tokens). Only :func:`reset` leaves it."""
    reason = validate_reason(reason)
    s = _operator_copy(state)
    s.last_revoked_at = now
    s.probes_required = s.probes_remaining = s.probes_ok = 0
    s.probe_deadline = None
    t = _move(s, FORCED_OPEN, now, "force_open", reason, {"previous": state.state},
              policy_version or state.policy_version, actor)
    return s, [t]


def reset(state: BreakerState, actor: str, reason: str, now: float,
          policy_version: str | None = None) -> tuple[BreakerState, list[Transition]]:
    """Operator reset: any state → closed; clears back-off, probes and approvals.

    ``last_revoked_at`` is kept: tokens issued before a revocation stay inactive.
    """
    reason = validate_reason(reason)
    s = _operator_copy(state)
    s.open_count, s.cooldown_s = 0, 0.0
    s.probes_required = s.probes_remaining = s.probes_ok = 0
    s.probe_deadline = None
    s.approvals = []
    t = _move(s, CLOSED, now, "reset", reason, {"previous": state.state},
              policy_version or state.policy_version, actor)
    s.budget = None
    return s, [t]


def approve(state: BreakerState, actor: str, reason: str, now: float, ttl_s: float,
            max_ttl_s: float | None = None) -> tuple[BreakerState, list[Transition]]:
    """Approve consequential tools of an escalated scope until ``now + ttl_s`` (capped).

    Raises :class:`BreakerActionError` unless the scope is escalated.
    """
    reason = validate_reason(reason)
    if state.state != ESCALATED:
        raise BreakerActionError(f"scope is {state.state}, approvals apply to escalated scopes only")
    if not ttl_s > 0:
        raise BreakerActionError("approval ttl must be positive")
    if max_ttl_s is not None:
        ttl_s = min(ttl_s, max_ttl_s)
    s = _operator_copy(state)
    a = Approval(actor, reason, now + ttl_s, now)
    s.approvals.append(a)
    s.updated_at = now
    t = Transition(s.scope, s.state, s.state, "approve", reason, {"approval": a.to_dict()},
                   state.policy_version, actor, now, s.budget, s.drill)
    return s, [t]
