"""Scrape-time metric families built from the monitor (detector gauges, breaker states)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from breakers.state_machine import STATES
from detectors import window_label
from streams.engine.labels import OTHER, LabelCap
from streams.engine.monitor import Monitor
from streams.settings import Settings
from streams.worker.metrics import gauge

WINDOWS = (300, 1800, 3600, 21600, 86400, 259200)

_caps: dict[int, tuple[LabelCap, LabelCap, LabelCap]] = {}


def _cap(settings: Settings) -> tuple[LabelCap, LabelCap, LabelCap]:
    key = id(settings)
    if key not in _caps:
        _caps[key] = (LabelCap(settings.max_agents), LabelCap(settings.max_tools),
                      LabelCap(settings.max_agents * 4))
    return _caps[key]


def monitor_families(monitor: Monitor, settings: Settings) -> Iterable[Metric]:
    agents_cap, tools_cap, scopes_cap = _cap(settings)
    rate: dict[tuple[str, str, str], tuple[float, float, float]] = {}
    for agent, tool, w, r, lo, hi in monitor.near_miss_rows(WINDOWS):
        rate[(agent, tool, window_label(w))] = (r, lo, hi)  # labels already capped by the monitor
    labels = ["agent", "tool", "window"]
    yield gauge("tripwire_near_miss_rate", "Near-misses (monitor flags) per tool call over the window.",
                labels, ((list(k), v[0]) for k, v in rate.items()))
    yield gauge("tripwire_near_miss_rate_lower", "Lower bound of the 95% Wilson interval of the near-miss rate.",
                labels, ((list(k), v[1]) for k, v in rate.items()))
    yield gauge("tripwire_near_miss_rate_upper", "Upper bound of the 95% Wilson interval of the near-miss rate.",
                labels, ((list(k), v[2]) for k, v in rate.items()))

    burn: dict[tuple[str, str, str], float] = {}
    remaining: dict[tuple[str, str], float] = {}
    firing: dict[tuple[str, str, str], float] = {}
    for scope, verdicts in monitor.last_verdicts.items():
        s = scopes_cap(scope)
        for v in verdicts:
            for w, b in v.burn_rates.items():
                burn[(v.budget, s, w)] = max(b, burn.get((v.budget, s, w), 0.0))
            budget = monitor.policy.budget(v.budget)
            if budget is not None:  # a budget a policy reload removed reports nothing
                k3 = (v.budget, s, budget.signal)
                firing[k3] = max(1.0 if v.fired else 0.0, firing.get(k3, 0.0))
            if v.budget_remaining is not None:
                k = (v.budget, s)
                remaining[k] = min(v.budget_remaining, remaining.get(k, 1.0))
    yield gauge("tripwire_burn_rate", "Budget burn rate (observed rate / objective) per window.",
                ["budget", "scope", "window"], ((list(k), v) for k, v in burn.items()))
    yield gauge("tripwire_budget_remaining_ratio", "Share of the budget left over its longest window.",
                ["budget", "scope"], ((list(k), v) for k, v in remaining.items()))
    yield gauge("tripwire_budget_firing", "1 while the budget's latest verdict for the scope fires (any rule: "
                "burn-rate or Poisson count), else 0.", ["budget", "scope", "signal"],
                ((list(k), v) for k, v in firing.items()))

    drift = CounterMetricFamily("tripwire_drift_detected", "Drift reports by agent and signal.",
                                labels=["agent", "signal"])
    merged: dict[tuple[str, str], int] = {}
    for (agent, signal), n in monitor.drift_total.items():
        k = (agents_cap(agent), signal)
        merged[k] = merged.get(k, 0) + n
    for k, n in merged.items():
        drift.add_metric(list(k), n)
    yield drift
    yield CounterMetricFamily("tripwire_events_late", "Events older than the allowed lateness, left out of windows.",
                              value=monitor.late_events)
    yield from _reliability(monitor, agents_cap)


def _reliability(monitor: Monitor, cap: LabelCap) -> Iterable[Metric]:
    rel_k: list[tuple[list[str], float]] = []
    cons_k: list[tuple[list[str], float]] = []
    simple: dict[str, list[tuple[list[str], float]]] = {
        "mtbce": [], "its": [], "prec": [], "rec": [], "coc": []}
    for agent, st in monitor.agents.items():
        label = st.label or cap(agent)
        if label == OTHER:
            continue
        r = st.reliability
        for k in range(1, 5):
            p = r.pass_at_k(k)
            if p is not None:
                rel_k.append(([label, str(k)], p))
            c = r.pass_hat_k(k)
            if c is not None:
                cons_k.append(([label, str(k)], c))
        m = r.mtbce()
        hours = m.get("mtbce_hours") if isinstance(m, dict) else None
        if hours is not None:
            simple["mtbce"].append(([label], hours * 3600.0))
        its = r.intervene_to_success()
        if its is not None:
            simple["its"].append(([label], its))
        sr = r.safe_refusal()
        if sr.get("precision") is not None:
            simple["prec"].append(([label], sr["precision"]))
        if sr.get("recall") is not None:
            simple["rec"].append(([label], sr["recall"]))
        coc = r.cost_of_confidence()
        if coc.get("spend_to_confidence") is not None:
            simple["coc"].append(([label], coc["spend_to_confidence"]))
    yield gauge("tripwire_reliability_at_k", "Reliability@K: P(task completes within K attempts), unbiased pass@k.",
                ["agent", "k"], rel_k)
    yield gauge("tripwire_consistency_at_k", "Consistency pass^K: P(all K attempts succeed).", ["agent", "k"], cons_k)
    yield gauge("tripwire_mtbce_seconds", "Mean active time between consequential errors (incidents).",
                ["agent"], simple["mtbce"])
    yield gauge("tripwire_intervene_to_success_ratio", "Tasks with intervention that still succeeded.",
                ["agent"], simple["its"])
    yield gauge("tripwire_safe_refusal_precision", "Refusals that should have been refusals.", ["agent"], simple["prec"])
    yield gauge("tripwire_safe_refusal_recall", "Should-refuse cases the agent refused.", ["agent"], simple["rec"])
    yield gauge("tripwire_cost_of_confidence_usd", "Spend to reach the configured confidence that a task completes.",
                ["agent"], simple["coc"])


def breaker_families(monitor: Monitor, counters: dict[str, Any]) -> Iterable[Metric]:
    fam = GaugeMetricFamily("tripwire_breaker_state", "1 for the breaker's current state.", labels=["scope", "state"])
    for scope, st in monitor.states.items():
        for s in STATES:
            fam.add_metric([scope, s], 1.0 if st.state == s else 0.0)
    yield fam
    tr = CounterMetricFamily("tripwire_breaker_transitions", "Breaker transitions made by this worker.",
                             labels=["from", "to"])
    for (a, b), n in monitor.transitions_total.items():
        tr.add_metric([a, b], n)
    yield tr
    am = CounterMetricFamily("tripwire_alertmanager_posts", "Posts to Alertmanager by result.", labels=["result"])
    am.add_metric(["ok"], counters.get("alert_ok", 0))
    am.add_metric(["error"], counters.get("alert_error", 0))
    yield am
    rl = CounterMetricFamily("tripwire_policy_reloads", "Policy reloads by result.", labels=["result"])
    rl.add_metric(["ok"], counters.get("reload_ok", 0))
    rl.add_metric(["error"], counters.get("reload_error", 0))
    yield rl
    yield CounterMetricFamily("tripwire_agents_spilled", "Agents moved out of memory to their compact checkpoint "
                              "(idle for engine.agent_spill_idle_s, or least recently seen past "
                              "engine.max_live_agents); restored on their next event.",
                              value=monitor.table.spilled_total)
    yield gauge("tripwire_agents_live", "Agents held live in memory (at most engine.max_live_agents, plus any with "
                "a breaker not closed).", [], [([], float(len(monitor.agents)))])
    ignored = CounterMetricFamily("tripwire_breaker_state_records_ignored",
                                  "breaker-state records this worker ignored, by reason: invalid_scope (the scope "
                                  "does not parse), malformed (no finite updated_at), future_updated_at (dated past "
                                  "the wall clock + skew), unauthenticated / bad_signature (no valid worker "
                                  "signature, with a signing keyring).",
                                  labels=["reason"])
    for reason, n in monitor.ignored_remote_states.items():
        ignored.add_metric([reason], n)
    yield ignored
    probes = CounterMetricFamily("tripwire_probe_results_ignored",
                                 "Clean half-open probe results not counted towards closing a breaker, by reason: "
                                 "unattested (the event was not signed by a key bound to its agent), "
                                 "no_issued_slot (more clean results than probe slots authz issued).",
                                 labels=["reason"])
    for reason, n in monitor.probes.ignored.items():
        probes.add_metric([reason], n)
    yield probes
    yield CounterMetricFamily("tripwire_evaluation_errors", "Scope evaluations and event updates that raised and "
                              "were skipped (each scope is logged once; the worker keeps running).",
                              value=monitor.evaluation_errors)
    info = GaugeMetricFamily("tripwire_policy_info", "The policy version in force.", labels=["version"])
    info.add_metric([monitor.policy.policy_version], 1.0)
    yield info
