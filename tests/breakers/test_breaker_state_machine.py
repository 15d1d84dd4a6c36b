from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from breakers.authz import decide
from breakers.state_machine import (
    BreakerActionError, BreakerState, Transition, approve, force_open, probe, record_probe_result, reset, step,
)

from helpers.breakers import T0, verdict

OPEN_V = verdict("trip", "open")
ESC_V = verdict("esc", "escalate")
SHD_V = verdict("shd", "shadow", severity="ticket")
QUIET = [verdict("trip", None, fired=False), verdict("esc", None, fired=False)]


@pytest.fixture
def closed(sm_policy):
    return BreakerState.initial("agent:a", T0, sm_policy)


def go(state, verdicts, now, policy):
    new, ts = step(state, verdicts, now, policy)
    return new, ts


def opened(closed, sm_policy, at=T0):
    s, ts = step(closed, [OPEN_V], at, sm_policy)
    assert s.state == "open"
    return s


def half_opened(closed, sm_policy):
    s = opened(closed, sm_policy)
    s, ts = step(s, QUIET, T0 + 60, sm_policy)
    assert s.state == "half_open" and ts[0].action == "half_open"
    return s


def test_initial_state(closed):
    assert closed.state == "closed" and closed.since == T0 and not closed.drill
    assert closed.policy_version == "sm-test"
    assert BreakerState.initial("agent:drill-3/tool:x", T0).drill


def test_closed_stays_closed_without_fired_verdicts(closed, sm_policy):
    s, ts = step(closed, QUIET, T0 + 5, sm_policy)
    assert s == closed and ts == []


def test_closed_to_open_carries_reason_and_evidence(closed, sm_policy):
    s, ts = step(closed, [ESC_V, OPEN_V], T0 + 1, sm_policy)
    assert s.state == "open" and s.budget == "trip"
    assert s.last_revoked_at == T0 + 1 and s.cooldown_s == 60 and s.open_count == 1
    (t,) = ts
    assert (t.from_state, t.to_state, t.action, t.actor, t.ts, t.policy_version) == (
        "closed", "open", "trip", "tripwire", T0 + 1, "sm-test")
    assert t.reason == OPEN_V.reason and t.budget == "trip"
    assert t.evidence["burn_rates"] == {"1h": 20.0, "5m": 20.0} and t.evidence["counts"]["1h"]["tool_calls"] == 100
    assert closed.state == "closed"  # input not mutated


def test_open_waits_for_cooldown(closed, sm_policy):
    s = opened(closed, sm_policy)
    s2, ts = step(s, QUIET, T0 + 59, sm_policy)
    assert s2.state == "open" and ts == []
    assert s.reopens_at == T0 + 60


def test_open_to_half_open_after_cooldown(closed, sm_policy):
    s = half_opened(closed, sm_policy)
    assert s.probes_remaining == 3 and s.probes_required == 3 and s.probes_ok == 0
    assert s.probe_deadline == T0 + 60 + 120


def test_open_still_firing_after_cooldown_reopens_with_backoff(closed, sm_policy):
    s = opened(closed, sm_policy)
    s, ts = step(s, [OPEN_V], T0 + 60, sm_policy)
    assert s.state == "open" and ts[0].action == "reopen" and ts[0].from_state == "open"
    assert s.cooldown_s == 120 and s.open_count == 2 and s.last_revoked_at == T0 + 60


def test_half_open_probe_accounting(closed, sm_policy):
    s = half_opened(closed, sm_policy)
    for left in (2, 1, 0):
        d = decide({s.scope: s}, "a", "ls", None, T0 + 61, sm_policy)
        assert d.allow and d.probe and d.scope == "agent:a" and d.state == "half_open"
        s, ok = probe(s, T0 + 61)
        assert ok and s.probes_remaining == left
    s2, ok = probe(s, T0 + 62)
    assert not ok and s2 is s
    d = decide({s.scope: s}, "a", "ls", None, T0 + 62, sm_policy)
    assert not d.allow and d.status == 403 and "no probe calls left" in d.reason


def test_half_open_clean_probes_close(closed, sm_policy):
    s = half_opened(closed, sm_policy)
    for _ in range(3):
        s, _ = probe(s, T0 + 61)
        s, ts = record_probe_result(s, True, T0 + 62, sm_policy)
        assert ts == []
    s, ts = step(s, QUIET, T0 + 63, sm_policy)
    assert s.state == "closed" and ts[0].action == "close" and "3 clean probe calls" in ts[0].reason
    assert s.probes_remaining == 0


def test_half_open_not_closed_until_all_probes_clean(closed, sm_policy):
    s = half_opened(closed, sm_policy)
    s, _ = record_probe_result(s, True, T0 + 62, sm_policy)
    s, ts = step(s, QUIET, T0 + 63, sm_policy)
    assert s.state == "half_open" and ts == []


def test_half_open_probe_failure_reopens_with_backoff(closed, sm_policy):
    s = half_opened(closed, sm_policy)
    s, ts = record_probe_result(s, False, T0 + 70, sm_policy, reason="monitor flag high", evidence={"event": "e1"})
    assert s.state == "open" and s.cooldown_s == 120 and s.open_count == 2 and s.last_revoked_at == T0 + 70
    assert ts[0].action == "probe_failed" and ts[0].from_state == "half_open"
    assert "monitor flag high" in ts[0].reason and ts[0].evidence["probe"] == {"event": "e1"}


def test_half_open_budget_firing_reopens(closed, sm_policy):
    s = half_opened(closed, sm_policy)
    s, ts = step(s, [OPEN_V], T0 + 65, sm_policy)
    assert s.state == "open" and ts[0].action == "reopen" and s.cooldown_s == 120


def test_backoff_is_exponential_and_capped(closed, sm_policy):
    s = opened(closed, sm_policy)
    now, cooldowns = T0, []
    for _ in range(7):
        now += s.cooldown_s
        s, _ = step(s, QUIET, now, sm_policy)
        assert s.state == "half_open"
        s, _ = record_probe_result(s, False, now, sm_policy)
        cooldowns.append(s.cooldown_s)
    assert cooldowns == [120, 240, 480, 480, 480, 480, 480]


def test_half_open_clean_but_escalate_fires_goes_escalated(closed, sm_policy):
    s = half_opened(closed, sm_policy)
    for _ in range(3):
        s, _ = record_probe_result(s, True, T0 + 62, sm_policy)
    s, ts = step(s, [ESC_V], T0 + 63, sm_policy)
    assert s.state == "escalated" and ts[0].from_state == "half_open" and s.budget == "esc"


def test_half_open_probes_rearmed_after_timeout(closed, sm_policy):
    s = half_opened(closed, sm_policy)
    for _ in range(3):
        s, _ = probe(s, T0 + 61)
    s, _ = record_probe_result(s, True, T0 + 62, sm_policy)
    s, ts = step(s, QUIET, T0 + 60 + 119, sm_policy)
    assert ts == [] and s.probes_remaining == 0
    s, ts = step(s, QUIET, T0 + 60 + 120, sm_policy)
    assert ts[0].action == "probes_rearmed" and s.probes_remaining == 2 and s.state == "half_open"


def test_retrip_soon_after_close_continues_backoff_later_resets(closed, sm_policy):
    s = half_opened(closed, sm_policy)
    for _ in range(3):
        s, _ = record_probe_result(s, True, T0 + 62, sm_policy)
    s, _ = step(s, QUIET, T0 + 63, sm_policy)
    assert s.state == "closed"
    soon, _ = step(s, [OPEN_V], T0 + 100, sm_policy)
    assert soon.cooldown_s == 120 and soon.open_count == 2
    later, _ = step(s, [OPEN_V], T0 + 63 + 480, sm_policy)
    assert later.cooldown_s == 60 and later.open_count == 1


def test_closed_to_escalated_and_hysteresis(closed, sm_policy):
    s, ts = step(closed, [ESC_V], T0, sm_policy)
    assert s.state == "escalated" and ts[0].action == "escalate" and s.last_revoked_at is None
    s, ts = step(s, QUIET, T0 + 10, sm_policy)
    assert s.state == "escalated" and s.clean_since == T0 + 10 and ts == []
    s, ts = step(s, QUIET, T0 + 10 + 299, sm_policy)
    assert s.state == "escalated"
    s, ts = step(s, [ESC_V], T0 + 10 + 299.5, sm_policy)  # fires again: the clock restarts
    assert s.state == "escalated" and s.clean_since is None
    s, _ = step(s, QUIET, T0 + 400, sm_policy)
    s, ts = step(s, QUIET, T0 + 699, sm_policy)
    assert s.state == "escalated"
    s, ts = step(s, QUIET, T0 + 700, sm_policy)
    assert s.state == "closed" and ts[0].action == "clear" and "300s" in ts[0].reason


def test_escalated_to_open(closed, sm_policy):
    s, _ = step(closed, [ESC_V], T0, sm_policy)
    s, ts = step(s, [ESC_V, OPEN_V], T0 + 5, sm_policy)
    assert s.state == "open" and ts[0].from_state == "escalated"


def test_escalated_clears_to_shadow_if_shadow_budget_fires(closed, sm_policy):
    s, _ = step(closed, [ESC_V], T0, sm_policy)
    s, _ = step(s, [SHD_V], T0 + 1, sm_policy)
    s, ts = step(s, [SHD_V], T0 + 301, sm_policy)
    assert s.state == "shadow" and ts[0].from_state == "escalated"


def test_no_flapping_when_signal_oscillates(closed, sm_policy):
    s, transitions = closed, []
    now = T0
    for i in range(360):  # one hour, the escalate budget fires every other evaluation
        now += 10
        s, ts = step(s, [ESC_V] if i % 2 == 0 else QUIET, now, sm_policy)
        transitions += ts
    assert [t.to_state for t in transitions] == ["escalated"]
    for _ in range(40):
        now += 10
        s, ts = step(s, QUIET, now, sm_policy)
        transitions += ts
    assert [t.to_state for t in transitions] == ["escalated", "closed"]


def test_oscillating_open_budget_backs_off(closed, sm_policy):
    s, transitions, now = closed, [], T0
    for i in range(720):  # two hours, evaluated every 10 s, firing every other time
        now += 10
        if s.state == "half_open" and s.probes_remaining:
            s, _ = probe(s, now)
            s, ts = record_probe_result(s, True, now, sm_policy)
            transitions += ts
        s, ts = step(s, [OPEN_V] if i % 2 == 0 else QUIET, now, sm_policy)
        transitions += ts
    opens = [t for t in transitions if t.to_state == "open"]
    assert not any(t.to_state == "closed" for t in transitions)  # never closes while it keeps firing
    # once capped, at most one open → half_open → open cycle per max cool-down (480 s)
    assert len(transitions) <= 4 + 3 * (7200 // 480)
    assert max(t.evidence["cooldown_s"] for t in opens) == 480


def test_approval_and_expiry(closed, sm_policy):
    s, _ = step(closed, [ESC_V], T0, sm_policy)
    states = lambda st: {st.scope: st}  # noqa: E731
    assert not decide(states(s), "a", "shell", None, T0 + 1, sm_policy).allow
    assert decide(states(s), "a", "ls", None, T0 + 1, sm_policy).allow
    s, ts = approve(s, "ann", "customer call, checked by hand", T0 + 2, ttl_s=600)
    assert ts[0].action == "approve" and ts[0].actor == "ann" and ts[0].from_state == ts[0].to_state == "escalated"
    assert s.approvals[0].expires_at == T0 + 602
    d = decide(states(s), "a", "shell", None, T0 + 3, sm_policy)
    assert d.allow and "approved by ann" in d.reason
    assert not decide(states(s), "a", "shell", None, T0 + 602, sm_policy).allow  # expired (authz checks time)
    s, ts = step(s, [ESC_V], T0 + 602, sm_policy)
    assert s.approvals == [] and ts[0].action == "approval_expired" and s.state == "escalated"


def test_approval_ttl_capped_and_only_when_escalated(closed, sm_policy):
    with pytest.raises(BreakerActionError):
        approve(closed, "ann", "why", T0, 600)
    s, _ = step(closed, [ESC_V], T0, sm_policy)
    s2, _ = approve(s, "ann", "why", T0, 10 * 3600, max_ttl_s=3600)
    assert s2.approvals[0].expires_at == T0 + 3600
    with pytest.raises(BreakerActionError):
        approve(s, "ann", "why", T0, 0)
    with pytest.raises(ValueError):
        approve(s, "ann", "   ", T0, 60)


def test_shadow_state_reports_never_denies(closed, sm_policy):
    s, ts = step(closed, [SHD_V], T0, sm_policy)
    assert s.state == "shadow" and ts[0].action == "shadow"
    for tool in ("shell", "payments.refund", "ls"):
        d = decide({s.scope: s}, "a", tool, None, T0, sm_policy)
        assert d.allow and d.state == "shadow"
    s, _ = step(s, [], T0 + 1, sm_policy)
    s, ts = step(s, [], T0 + 101, sm_policy)
    assert s.state == "closed" and ts[0].action == "clear"


def test_shadow_to_escalated_and_open(closed, sm_policy):
    s, _ = step(closed, [SHD_V], T0, sm_policy)
    e, ts = step(s, [SHD_V, ESC_V], T0 + 1, sm_policy)
    assert e.state == "escalated" and ts[0].from_state == "shadow"
    o, ts = step(s, [SHD_V, OPEN_V], T0 + 1, sm_policy)
    assert o.state == "open"


def test_forced_open_only_left_by_reset(closed, sm_policy):
    s, ts = force_open(closed, "bob", "suspicious transfers", T0)
    assert s.state == "forced_open" and s.last_revoked_at == T0 and ts[0].actor == "bob"
    for i in range(50):
        s, ts = step(s, QUIET if i % 2 else [ESC_V, SHD_V], T0 + i * 1000, sm_policy)
        assert s.state == "forced_open" and ts == []
        s, ts = record_probe_result(s, True, T0 + i, sm_policy)
        assert s.state == "forced_open"
    assert not decide({s.scope: s}, "a", "ls", None, T0, sm_policy).allow
    s, ts = reset(s, "bob", "checked", T0 + 99_999)
    assert s.state == "closed" and ts[0].action == "reset" and ts[0].from_state == "forced_open"
    assert s.last_revoked_at == T0  # old tokens stay revoked


@pytest.mark.parametrize("start", ["open", "half_open", "escalated", "shadow", "closed"])
def test_force_open_and_reset_from_any_state(closed, sm_policy, start):
    s = BreakerState.from_dict({**closed.to_dict(), "state": start, "open_count": 3, "cooldown_s": 480})
    f, _ = force_open(s, "ops", "kill", T0)
    assert f.state == "forced_open"
    r, ts = reset(s, "ops", "ok", T0)
    assert r.state == "closed" and r.open_count == 0 and r.cooldown_s == 0 and ts[0].from_state == start


def test_operator_actions_need_reason(closed):
    for fn in (force_open, reset):
        with pytest.raises(ValueError):
            fn(closed, "ops", "", T0)
        with pytest.raises(ValueError):
            fn(closed, "ops", "x" * 501, T0)


def test_state_json_round_trip(closed, sm_policy):
    s, _ = step(closed, [ESC_V], T0, sm_policy)
    s, _ = approve(s, "ann", "ok", T0, 60)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["schema"] == 1 and d["approvals"][0]["actor"] == "ann"
    assert BreakerState.from_dict(d) == s
    assert BreakerState.from_dict({**d, "future_field": 1}) == s
    with pytest.raises(ValueError):
        BreakerState.from_dict({**d, "state": "melted"})


def test_transition_round_trip(closed, sm_policy):
    _, (t,) = step(closed, [OPEN_V], T0, sm_policy)
    d = json.loads(json.dumps(t.to_dict()))
    assert d["from"] == "closed" and d["to"] == "open"
    assert Transition.from_dict(d) == t


def test_record_probe_result_outside_half_open_is_noop(closed, sm_policy):
    assert record_probe_result(closed, False, T0, sm_policy) == (closed, [])
    assert probe(closed, T0) == (closed, False)


def test_unknown_budget_after_policy_reload_uses_defaults(closed, sm_policy):
    from breakers.policy import parse_policy

    s = opened(closed, sm_policy)
    empty = parse_policy("version: new\n")
    s, ts = step(s, [], T0 + 60, empty)
    assert s.state == "half_open" and s.probes_remaining == 5 and ts[0].policy_version == "new"


# ---------------------------------------------------------------- property-based

_ops = st.lists(st.tuples(
    st.sampled_from(["step_open", "step_esc", "step_shd", "step_quiet", "probe", "ok", "fail", "approve",
                     "force", "reset", "wait"]),
    st.floats(0, 2000)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops=_ops)
def test_forced_open_never_left_without_reset(sm_policy, ops):
    s = BreakerState.initial("agent:a", T0, sm_policy)
    now = T0
    forced = False
    for op, dt in ops:
        now += dt
        ts = []
        if op.startswith("step"):
            v = {"step_open": [OPEN_V], "step_esc": [ESC_V], "step_shd": [SHD_V], "step_quiet": QUIET}[op]
            s, ts = step(s, v, now, sm_policy)
        elif op == "probe":
            s, _ = probe(s, now)
            ts = []
        elif op in ("ok", "fail"):
            s, ts = record_probe_result(s, op == "ok", now, sm_policy)
        elif op == "approve":
            try:
                s, ts = approve(s, "ann", "r", now, 600)
            except BreakerActionError:
                ts = []
        elif op == "force":
            s, ts = force_open(s, "ops", "r", now)
            forced = True
        elif op == "reset":
            s, ts = reset(s, "ops", "r", now)
            forced = False
        for t in ts:
            assert t.ts == now and t.policy_version in ("sm-test",) and t.actor in ("tripwire", "ann", "ops")
            if t.from_state == "forced_open":
                assert t.action in ("reset", "force_open", "approval_expired")
        if forced:
            assert s.state == "forced_open"
            assert not decide({s.scope: s}, "a", "ls", None, now, sm_policy).allow
        assert s.cooldown_s <= 480
        assert BreakerState.from_dict(json.loads(json.dumps(s.to_dict()))) == s


# ------------------------------------------------------------------ next_deadline: settled between timers
FIRED_SETS = st.lists(st.sampled_from([OPEN_V, ESC_V, SHD_V]), unique_by=lambda v: v.budget, max_size=3)


@settings(max_examples=300, deadline=None)
@given(history=st.lists(st.tuples(FIRED_SETS, st.floats(0.5, 4000.0)), min_size=1, max_size=8),
       probes_ok=st.integers(0, 4), approval_ttl=st.one_of(st.none(), st.floats(1.0, 5000.0)),
       probes=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
def test_a_settled_state_does_not_change_before_its_deadline(history, probes_ok, approval_ttl, probes):
    """The engine skips scopes whose evidence did not change until ``next_deadline`` (decisions unchanged).

    Drive a breaker through random verdict sets; after each step, stepping it again with the same
    verdicts at any time before ``next_deadline`` must change nothing (except half-open, which is
    always re-evaluated), and at the deadline a step is allowed to act.
    """
    from breakers.policy import parse_policy
    from breakers.state_machine import next_deadline
    from helpers.breakers import SM_POLICY

    policy = parse_policy(SM_POLICY, "sm.yaml")
    s, now = BreakerState.initial("agent:a", T0, policy), T0
    for fired, dt in history:
        now += dt
        if s.state == "half_open":  # probe results arrive between evaluations
            s = s.__class__(**{**{f: getattr(s, f) for f in s.__slots__}, "probes_ok": probes_ok})
        if s.state == "escalated" and approval_ttl is not None and not s.approvals:
            s, _ = approve(s, "ops", "checked the traces", now, approval_ttl)
        s, _ = step(s, fired, now, policy)
        deadline = next_deadline(s, policy)
        if s.state == "half_open":
            assert deadline == float("-inf")
            continue
        for p in probes:
            t = now + p * (min(deadline, now + 10 * 86400) - now)
            if t < deadline:
                again, transitions = step(s, fired, t, policy)
                assert again == s and transitions == [], (s.state, t - now, deadline - now)


@settings(max_examples=400, deadline=None)
@given(history=st.lists(st.tuples(FIRED_SETS, st.floats(0.5, 4000.0)), min_size=1, max_size=8),
       probe_fired=FIRED_SETS, later=st.floats(0.0, 8000.0), approval_ttl=st.one_of(st.none(), st.floats(1.0, 5000.0)))
def test_settled_is_exactly_when_a_step_changes_nothing(history, probe_fired, later, approval_ttl):
    """breakers.state_machine.settled (what the backtest's screen asks) = step leaves the state as it is."""
    from breakers.policy import parse_policy
    from breakers.state_machine import settled
    from helpers.breakers import SM_POLICY

    policy = parse_policy(SM_POLICY, "sm.yaml")
    s, now = BreakerState.initial("agent:a", T0, policy), T0
    for fired, dt in history:
        now += dt
        if s.state == "escalated" and approval_ttl is not None and not s.approvals:
            s, _ = approve(s, "ops", "checked the traces", now, approval_ttl)
        s, _ = step(s, fired, now, policy)
    t = now + later
    new, transitions = step(s, probe_fired, t, policy)
    unchanged = new == s and transitions == []
    answer = settled(s, frozenset(v.action for v in probe_fired), t, policy)
    if s.state == "half_open":
        assert answer is False
    else:
        assert answer == unchanged, (s.state, [v.action for v in probe_fired], later)
