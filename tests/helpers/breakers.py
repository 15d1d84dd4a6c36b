"""Helpers shared by the breakers tests."""
from __future__ import annotations

from pathlib import Path

from breakers.evaluate import Verdict
from breakers.evidence import StaticEvidence

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "deploy" / "policy" / "default.yaml"
T0 = 1_700_000_000.0
ALL_WINDOWS = (300, 1800, 3600, 21600, 259200)

SM_POLICY = """
version: sm-test
consequential_tools: ["payments.*", "shell"]
probe_timeout: 120
budgets:
  - name: trip
    signal: near_miss_rate
    scopes: ["*"]
    objective: 0.1
    action: open
    cooldown: 60
    max_cooldown: 480
    backoff_factor: 2
    half_open_probes: 3
  - name: esc
    signal: near_miss_rate
    scopes: ["*"]
    objective: 0.1
    action: escalate
    clear_after: 300
  - name: shd
    signal: drift
    scopes: ["*"]
    action: shadow
    clear_after: 100
"""


def verdict(budget: str, action: str | None, scope: str = "agent:a", fired: bool = True,
            burn: float = 20.0, severity: str = "page") -> Verdict:
    """A hand-made verdict (state-machine tests do not need real evidence)."""
    return Verdict(budget=budget, scope=scope, signal="near_miss_rate", fired=fired,
                   action=action if fired else None, severity=severity if fired else None,
                   burn_rates={"1h": burn, "5m": burn}, budget_remaining=1 - burn, remaining_window_s=3600,
                   evidence={"1h": {"tool_calls": 100, "near_misses": 30}},
                   reason=f"{budget} burn {burn}", rule="14.4x over 1h+5m" if fired else None,
                   min_evidence_met=True)


def burst(scope: str, windows=ALL_WINDOWS, ev: StaticEvidence | None = None, **counts) -> StaticEvidence:
    """Evidence where every window holds the same counts (a burst inside the shortest window)."""
    return (ev or StaticEvidence()).set_all(scope, windows, **counts)
