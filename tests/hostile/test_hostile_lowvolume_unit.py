"""Issue #15 (3), low volume, without a broker: the shipped policy driven through evaluate → step → decide.

The attack: keep the call volume under the harm budget's minimum evidence (200 calls an hour)
and cause critical incidents. On the old default policy 50 critical incidents in 199 calls (and
5 in 6 calls) left the agent closed; now `critical-incidents-low-volume` opens it. Honest low
volume — incidents that are not improbable at the 2% objective — stays closed.
"""

from __future__ import annotations

import pytest

from breakers.authz import decide
from breakers.evaluate import evaluate
from breakers.policy import Policy, load_policy
from breakers.state_machine import BreakerState, step
from detectors.poisson import min_count_to_fire
from helpers.breakers import DEFAULT_POLICY, T0, burst

BUDGET = "critical-incidents-low-volume"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


def trip(policy: Policy, scope: str, calls: int, critical: int) -> tuple[BreakerState, list]:
    ev = burst(scope, tool_calls=calls, incidents=critical, incidents_critical=critical)
    return step(BreakerState.initial(scope, T0, policy), evaluate(policy, scope, ev), T0, policy)


@pytest.mark.parametrize("calls,critical", [(199, 50), (6, 5), (0, 3), (9, 3), (50, 6), (100, 9), (199, 12)])
def test_few_critical_incidents_at_low_volume_open_the_agent(policy: Policy, calls: int, critical: int) -> None:
    for scope, tool in (("agent:quiet", "search"), ("agent:quiet/tool:shell", "shell")):
        s, (t,) = trip(policy, scope, calls, critical)
        assert s.state == "open" and t.budget == BUDGET, (scope, t)
        assert "improbable" in t.reason and f"{critical} critical incidents / {calls} calls in 1h" in t.reason
        assert not decide({scope: s}, "quiet", tool, None, T0, policy).allow


@pytest.mark.parametrize("calls,critical", [(199, 11), (100, 8), (50, 5), (10, 3), (6, 2), (0, 2), (1, 1),
                                            (150, 3), (20, 1)])
def test_honest_low_volume_stays_closed(policy: Policy, calls: int, critical: int) -> None:
    s, ts = trip(policy, "agent:honest", calls, critical)
    assert s.state == "closed" and ts == []
    assert decide({"agent:honest": s}, "honest", "shell", None, T0, policy).allow


def test_the_thresholds_the_policy_comments_state(policy: Policy) -> None:
    b = policy.budget(BUDGET)
    assert b is not None and b.min_evidence.min_calls == 0 and b.objective == 0.02
    (rule,) = b.windows
    assert rule.poisson_alpha == 0.001 and rule.long == 3600
    need = {n: min_count_to_fire(b.objective * n, rule.poisson_alpha, int(b.min_evidence.min_bad))
            for n in (0, 9, 10, 20, 50, 100, 199, 1000)}
    assert need == {0: 3, 9: 3, 10: 4, 20: 4, 50: 6, 100: 9, 199: 12, 1000: 36}
    text = DEFAULT_POLICY.read_text()
    assert "0-9 calls: 3 · 10-20: 4 · 50: 6 · 100: 9 · 199: 12 · 1000: 36" in text


def test_above_the_rate_rules_volume_the_rate_rule_still_decides(policy: Policy) -> None:
    # 6 in 250 calls (2.4%): the rate rule opens, the Poisson rule alone would not (P(X≥6 | 5) = 0.38)
    s, (t,) = trip(policy, "agent:busy", 250, 6)
    assert s.state == "open" and t.budget == "critical-incidents"
    verdicts = {v.budget: v for v in evaluate(policy, "agent:busy",
                                              burst("agent:busy", tool_calls=250, incidents_critical=6))}
    assert not verdicts[BUDGET].fired and "not improbable" in verdicts[BUDGET].reason
