"""The shipped deploy/policy/default.yaml driven through evaluate → step → decide."""
from __future__ import annotations

from breakers.authz import decide
from breakers.evaluate import evaluate
from breakers.evidence import StaticEvidence
from breakers.state_machine import BreakerState, record_probe_result, step

from helpers.breakers import ALL_WINDOWS, T0, burst
from helpers.support import shared_data


def run(policy, scope, ev, now, state=None):
    state = state or BreakerState.initial(scope, now, policy)
    return step(state, evaluate(policy, scope, ev), now, policy)


def test_zero_flags_and_incidents_stay_closed_over_a_day(default_policy):
    scope = "agent:busy/tool:payments.refund"
    ev = burst(scope, tool_calls=5_000_000, llm_calls=1_000_000, cost_usd=50_000, events=9e6)
    ev.drift.add(scope)
    s = BreakerState.initial(scope, T0, default_policy)
    for i in range(0, 86400, 600):
        s, ts = run(default_policy, scope, ev, T0 + i, s)
        assert s.state == "closed" and ts == []


def test_critical_incidents_open_agent_and_agent_tool(default_policy):
    for scope, agent, tool in (("agent:a", "a", "ls"), ("agent:a/tool:shell", "a", "shell")):
        ev = burst(scope, tool_calls=250, incidents=6, incidents_critical=6)
        s, (t,) = run(default_policy, scope, ev, T0)
        assert s.state == "open" and t.budget == "critical-incidents"
        assert "6 critical incidents / 250 calls in 1h" in t.reason
        assert not decide({scope: s}, agent, tool, None, T0, default_policy).allow


def test_weighted_fast_burn_escalates_and_needs_approval(default_policy):
    scope = "agent:a"
    ev = burst(scope, tool_calls=210, near_misses=41, near_misses_weighted=382.2)
    s, (t,) = run(default_policy, scope, ev, T0)
    assert s.state == "escalated" and t.evidence["rule"] == "14.4x over 1h+5m"
    assert not decide({scope: s}, "a", "payments.charge", None, T0, default_policy).allow
    assert not decide({scope: s}, "a", "email.send", None, T0, default_policy).allow
    assert decide({scope: s}, "a", "search", None, T0, default_policy).allow
    # the burst passes: only the 3-day ticket rule still fires → after 30 min clean, shadow
    quiet = StaticEvidence().set_all(scope, (300, 1800, 3600), tool_calls=500, near_misses=1,
                                     near_misses_weighted=2)
    quiet.set(scope, 21600, tool_calls=1000, near_misses=30, near_misses_weighted=150)  # 1.5× < 6×
    quiet.set(scope, 259200, tool_calls=2000, near_misses=60, near_misses_weighted=300)  # 1.5× > 1× ticket
    s, ts = run(default_policy, scope, quiet, T0 + 60, s)
    assert s.state == "escalated" and s.clean_since == T0 + 60
    s, ts = run(default_policy, scope, quiet, T0 + 60 + 1800, s)
    assert s.state == "shadow" and ts[0].action == "clear"
    assert decide({scope: s}, "a", "payments.charge", None, T0, default_policy).allow


def test_one_flag_in_two_calls_stays_closed(default_policy):
    ev = burst("agent:a", tool_calls=2, near_misses=1, near_misses_weighted=10, incidents_critical=1)
    s, ts = run(default_policy, "agent:a", ev, T0)
    assert s.state == "closed" and ts == []


def test_drill_scope_full_cycle(default_policy):
    scope = "agent:drill-1/tool:shell"
    ev = burst(scope, tool_calls=300, incidents_critical=30)
    s, (t,) = run(default_policy, scope, ev, T0)
    assert s.state == "open" and s.drill and t.drill
    # still firing at the end of the 5 min cool-down → backs off to 10 min
    s, (t,) = run(default_policy, scope, ev, T0 + 300, s)
    assert t.action == "reopen" and s.cooldown_s == 600
    # the hour rolls past the incidents; cool-down over → half-open, 5 clean probes → closed
    clean = burst(scope, windows=ALL_WINDOWS, tool_calls=0)
    s, (t,) = run(default_policy, scope, clean, T0 + 900, s)
    assert s.state == "half_open" and s.probes_remaining == 5
    for _ in range(5):
        s, _ = record_probe_result(s, True, T0 + 901, default_policy)
    s, (t,) = run(default_policy, scope, clean, T0 + 902, s)
    assert s.state == "closed" and t.action == "close"


DATA = "toolemu-trace-v1.jsonl"  # in the shared data set (support.shared_data)
WEIGHTS = {"low": 1, "medium": 2, "high": 5, "critical": 10}  # detectors' default severity weights


def _replay_states(policy, agents):
    """Replay the real ToolEmu traces per agent, evaluating every 60 s of trace time."""
    import json

    events: dict[str, list[dict]] = {a: [] for a in agents}
    with shared_data(DATA).open() as f:
        for line in f:
            e = json.loads(line)
            if e["agent_id"] in events:
                events[e["agent_id"]].append(e)
    out = {}
    for agent, evs in events.items():
        scope = f"agent:{agent}"
        evs.sort(key=lambda e: e["ts"])
        s = BreakerState.initial(scope, evs[0]["ts"] / 1000, policy)
        seen: list[tuple[float, dict]] = []
        next_eval = evs[0]["ts"] / 1000 + 60
        visited = {"closed"}
        for e in evs + [None]:
            now = e["ts"] / 1000 if e else next_eval
            while now >= next_eval or e is None:
                ev = StaticEvidence()
                for w in ALL_WINDOWS:
                    c = {"tool_calls": 0, "near_misses": 0, "near_misses_weighted": 0}
                    for ts, x in seen:
                        if ts > next_eval - w:
                            if x["kind"] == "tool_call":
                                c["tool_calls"] += 1
                            elif x["kind"] == "monitor_flag":
                                c["near_misses"] += 1
                                c["near_misses_weighted"] += WEIGHTS.get(x.get("severity"), 1)
                    ev.set(scope, w, **c)
                s, _ = step(s, evaluate(policy, scope, ev), next_eval, policy)
                visited.add(s.state)
                next_eval += 60
                if e is None:
                    break
            if e is None:
                break
            seen.append((e["ts"] / 1000, e))
        out[agent] = visited
    return out


def test_real_toolemu_traces_escalate_worst_not_best(default_policy):
    visited = _replay_states(default_policy, ["gpt-5-mini", "microsoft_phi-4"])
    assert "escalated" not in visited["gpt-5-mini"] and "open" not in visited["gpt-5-mini"]
    assert "escalated" in visited["microsoft_phi-4"]
