"""Scrape-time metric families built from the monitor (detector gauges, breaker states)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from breakers.state_machine import CLOSED, STATES
from detectors import window_label
from streams.engine.labels import OTHER, LabelCap
from streams.engine.readouts import TOTAL_KINDS, evidence_digest, exported_scopes, near_miss_rows, text_label
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
    rows = near_miss_rows(monitor.agents.values(), monitor.other_counts, monitor.tool_cap, WINDOWS,
                          monitor.clock.now(), tools_per_agent=settings.metrics_tools_per_agent)
    for agent, tool, w, r, lo, hi in rows:
        rate[(agent, tool, window_label(w))] = (r, lo, hi)  # labels already capped by the monitor
    labels = ["agent", "tool", "window"]
    yield gauge("tripwire_near_miss_rate", "Near-misses (monitor flags) per tool call over the window, min(flags, calls) / calls: at most 1 "
                "(several flags on one call count once at most; the uncapped ratio is "
                "tripwire_agent_near_misses_total / tripwire_agent_tool_calls_total).",
                labels, ((list(k), v[0]) for k, v in rate.items()))
    yield gauge("tripwire_near_miss_rate_lower", "Lower bound of the 95% Wilson interval of the near-miss rate.",
                labels, ((list(k), v[1]) for k, v in rate.items()))
    yield gauge("tripwire_near_miss_rate_upper", "Upper bound of the 95% Wilson interval of the near-miss rate.",
                labels, ((list(k), v[2]) for k, v in rate.items()))

    burn: dict[tuple[str, str, str], float] = {}
    remaining: dict[tuple[str, str], float] = {}
    firing: dict[tuple[str, str, str], float] = {}
    sufficient: dict[tuple[str, str, str], float] = {}
    keep = _budget_scopes(monitor, settings)
    for scope, verdicts in monitor.last_verdicts.items():
        if scope not in keep:  # cardinality by design: see _budget_scopes
            continue
        s = scopes_cap(scope)
        for v in verdicts:
            for w, b in v.burn_rates.items():
                burn[(v.budget, s, w)] = max(b, burn.get((v.budget, s, w), 0.0))
            for w, ok in v.evidence_sufficient.items():
                sufficient[(v.budget, s, w)] = max(1.0 if ok else 0.0, sufficient.get((v.budget, s, w), 0.0))
            budget = monitor.policy.budget(v.budget)
            if budget is not None:  # a budget a policy reload removed reports nothing
                k3 = (v.budget, s, budget.signal)
                firing[k3] = max(1.0 if v.fired else 0.0, firing.get(k3, 0.0))
            if v.budget_remaining is not None:
                k = (v.budget, s)
                remaining[k] = min(v.budget_remaining, remaining.get(k, 1.0))
    yield gauge("tripwire_burn_rate", "Budget burn rate (observed rate / objective) per window.",
                ["budget", "scope", "window"], ((list(k), v) for k, v in burn.items()))
    yield gauge("tripwire_budget_remaining_ratio", "Fraction of this period's budget still unspent, over the "
                "budget's declared period (default 30d): 1 - amount/objective (incident_count, cost), "
                "1 - burn over the period x min(1, observed span / period) (ratio signals); negative when overspent.",
                ["budget", "scope"], ((list(k), v) for k, v in remaining.items()))
    yield gauge("tripwire_budget_evidence_sufficient", "1 while the budget's minimum evidence (min_calls, min_bad, "
                "confidence) holds over the rule's long window, else 0: the gate the breaker applies before a rule "
                "can fire, which the burn-rate alerts apply too.", ["budget", "scope", "window"],
                ((list(k), v) for k, v in sufficient.items()))
    yield gauge("tripwire_budget_firing", "1 while the budget's latest verdict for the scope fires (any rule: "
                "burn-rate or Poisson count), else 0.", ["budget", "scope", "signal"],
                ((list(k), v) for k, v in firing.items()))

    drift = CounterMetricFamily("tripwire_drift_detected", "Drift reports by agent and signal: behaviour "
                                "(ADWIN / tool-mix JSD) and task_success (two-proportion z on the task success "
                                "rate, recent 50 vs reference 100 outcomes); docs/metrics.md.",
                                labels=["agent", "signal"])
    merged: dict[tuple[str, str], int] = {}
    for (agent, signal), n in monitor.drift_total.items():
        k = (agents_cap(agent), signal)
        merged[k] = merged.get(k, 0) + n
    for k, n in merged.items():
        drift.add_metric(list(k), n)
    yield drift
    changes = CounterMetricFamily("tripwire_model_changes", "Model changes by agent: a model other than the "
                                  "agent's current one named by consecutive events (engine.drift_model_confirm); "
                                  "each restarts the agent's drift detectors and is a model_change record on "
                                  "breaker-events.", labels=["agent"])
    merged_changes: dict[str, int] = {}
    for agent, n in monitor.model_changes_total.items():
        a = agents_cap(agent)
        merged_changes[a] = merged_changes.get(a, 0) + n
    for a, n in merged_changes.items():
        changes.add_metric([a], n)
    yield changes
    yield from _agent_totals(monitor)
    yield CounterMetricFamily("tripwire_events_late", "Events older than the allowed lateness, left out of windows.",
                              value=monitor.late_events)
    drill_events = CounterMetricFamily("tripwire_drill_events", "Accepted events of drill agents (agent id starts "
                                       "with the policy's drill_prefix) by kind, also counted in "
                                       "tripwire_events_total: production aggregates subtract them.", labels=["kind"])
    for kind, n in sorted(monitor.drill_events.items()):
        drill_events.add_metric([kind], n)
    yield drill_events
    yield from _reliability(monitor, agents_cap)


def _budget_scopes(monitor: Monitor, settings: Settings) -> set[str]:
    """Scopes with per-scope budget series: agent, tool and global scopes, non-closed scopes and the
    ``metrics_top_scopes`` agent×tool scopes by highest burn (:func:`exported_scopes`)."""
    burns = {scope: max((b for v in verdicts for b in v.burn_rates.values()), default=0.0)
             for scope, verdicts in monitor.last_verdicts.items()}
    not_closed = {scope for scope, st in monitor.states.items() if st.state != CLOSED}
    return exported_scopes(burns, not_closed, settings.metrics_top_scopes)


#: kind → per-agent counter (Sloth/Pyrra-style SLOs: near_misses / tool_calls per agent)
AGENT_TOTALS = {"tool_call": ("tripwire_agent_tool_calls", "Accepted tool_call events per agent (label capped)."),
                "monitor_flag": ("tripwire_agent_near_misses",
                                 "Accepted monitor_flag events (near-misses) per agent (label capped).")}
assert set(AGENT_TOTALS) == set(TOTAL_KINDS)


def _agent_totals(monitor: Monitor) -> Iterable[Metric]:
    fams = {kind: CounterMetricFamily(name, doc, labels=["agent"]) for kind, (name, doc) in AGENT_TOTALS.items()}
    for (agent, kind), n in monitor.agent_totals.items():
        fams[kind].add_metric([agent], n)
    yield from fams.values()


def authz_families(denied_by_scope: dict[str, int], settings: Settings) -> Iterable[Metric]:
    """``tripwire_authz_denied_total{scope}``: calls each non-closed scope denied (resilience4j's
    ``not_permitted_calls_total``), scopes past ``metrics_max_denied_scopes`` as ``other``."""
    hit = _denied_caps.get(id(settings))
    if hit is None or hit[0] is not settings:  # an id is reused once its object is gone: check it is this one
        if len(_denied_caps) > 64:
            _denied_caps.clear()
        hit = _denied_caps[id(settings)] = (settings, LabelCap(settings.metrics_max_denied_scopes))
    cap = hit[1]
    merged: dict[str, int] = {}
    for scope, n in denied_by_scope.items():
        label = cap(scope)
        merged[label] = merged.get(label, 0) + n
    fam = CounterMetricFamily("tripwire_authz_denied", "GET /v1/authz calls denied, by the scope whose breaker "
                              "denied them.", labels=["scope"])
    for scope, n in merged.items():
        fam.add_metric([scope], n)
    yield fam


#: per Settings object (kept alive with its cap, so its id is not reused meanwhile): the denied-scope label cap
_denied_caps: dict[int, tuple[Settings, LabelCap]] = {}


def _reliability(monitor: Monitor, cap: LabelCap) -> Iterable[Metric]:
    """Reliability families; formulas in docs/metrics.md (section *Reliability*) and
    :mod:`detectors.reliability`; read-time settings from the policy's ``reliability`` section."""
    pol = monitor.policy.reliability
    override = None if pol.attempt_kind == "auto" else pol.attempt_kind
    rows: dict[str, list[tuple[list[str], float]]] = {
        n: [] for n in ("rel", "cons", "mtbce", "mtbce_lo", "mtbce_hi", "exposure", "its", "prec", "rec",
                        "coc", "coc_undef")}
    for agent, st in monitor.agents.items():
        label = st.label or cap(agent)
        if label == OTHER:
            continue
        r = st.reliability
        rel = r.reliability(override=override, settle_s=pol.retry_settle)
        shape = rel["shape"]
        for k, p in rel["reliability_at_k"].items():
            if p is not None:
                rows["rel"].append(([label, str(k), shape], p))
        for k, c in rel["consistency_at_k"].items():
            if c is not None:
                rows["cons"].append(([label, str(k)], c))
        m = r.mtbce(materiality=pol.materiality)
        for key, name in (("mtbce_seconds", "mtbce"), ("mtbce_seconds_lower", "mtbce_lo"),
                          ("mtbce_seconds_upper", "mtbce_hi")):
            if m[key] is not None:
                rows[name].append(([label], m[key]))
        if r.first_ts is not None:
            rows["exposure"].append(([label], m["exposure_s"]))
        its = r.intervene_to_success()
        if its is not None:
            rows["its"].append(([label], its))
        sr = r.safe_refusal()
        if sr.get("precision") is not None:
            rows["prec"].append(([label], sr["precision"]))
        if sr.get("recall") is not None:
            rows["rec"].append(([label], sr["recall"]))
        coc = r.cost_of_confidence(confidence=pol.confidence, shape=shape, settle_s=pol.retry_settle)
        if coc["spend_to_confidence"] is not None:
            rows["coc"].append(([label], coc["spend_to_confidence"]))
        if coc["reason"] is not None:
            rows["coc_undef"].append(([label, coc["reason"]], 1.0))
    yield gauge("tripwire_reliability_at_k", "Reliability@K, by the agent's attempt shape. shape=retry: tasks "
                "whose first success is at attempt <= K / tasks whose outcome within K is known (in-flight "
                "tasks left out); shape=trial: unbiased pass@k, mean over tasks with n >= K of "
                "1 - C(n-c,K)/C(n,K).", ["agent", "k", "shape"], rows["rel"])
    yield gauge("tripwire_consistency_at_k", "Consistency pass^K = mean over tasks with n >= K of C(c,K)/C(n,K); "
                "trial-shaped agents only (absent for retries, which stop at the first success).",
                ["agent", "k"], rows["cons"])
    yield gauge("tripwire_mtbce_seconds", "MTBCE = clock exposure (latest - first event time of the agent) / "
                "incidents at or above the policy's materiality severity (or with none); +Inf with none yet.",
                ["agent"], rows["mtbce"])
    yield gauge("tripwire_mtbce_seconds_lower", "Lower bound of MTBCE: exposure / Garwood upper bound of the "
                "material incident count (95% interval); finite for safe agents.",
                ["agent"], rows["mtbce_lo"])
    yield gauge("tripwire_mtbce_seconds_upper", "Upper bound of MTBCE: exposure / Garwood lower bound of the "
                "material incident count (95%); +Inf with no material incident.", ["agent"], rows["mtbce_hi"])
    yield gauge("tripwire_mtbce_exposure_seconds", "Clock time the agent has been observed: its latest minus its "
                "first event time (the MTBCE numerator).", ["agent"], rows["exposure"])
    yield gauge("tripwire_intervene_to_success_ratio", "Intervene-to-success = successful task outcomes with "
                "intervened=true / successful task outcomes.", ["agent"], rows["its"])
    yield gauge("tripwire_safe_refusal_precision", "Refusals that should have been refusals.", ["agent"], rows["prec"])
    yield gauge("tripwire_safe_refusal_recall", "Should-refuse cases the agent refused.", ["agent"], rows["rec"])
    yield gauge("tripwire_cost_of_confidence_usd", "Cost of confidence = k_X * spend / attempts, k_X = least K with "
                "Reliability@K >= the policy's confidence X (observed attempts-to-success distribution); "
                "+Inf when no observed K reaches X (see tripwire_cost_of_confidence_undefined).",
                ["agent"], rows["coc"])
    yield gauge("tripwire_cost_of_confidence_undefined", "1 when the agent's cost of confidence is not a finite "
                "figure, by reason: unreachable (+Inf: no observed K reaches the confidence), no_tasks (absent: "
                "no task outcomes with a task_id).", ["agent", "reason"], rows["coc_undef"])


def breaker_families(monitor: Monitor, counters: dict[str, Any]) -> Iterable[Metric]:
    yield from breaker_state_families(monitor)
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


def breaker_state_families(monitor: Monitor) -> Iterable[Metric]:
    """Per-scope breaker series, for scopes whose breaker is NOT closed only (a closed scope has none:
    absent = closed): ``tripwire_breaker_state`` (one-hot over the states), since when
    (``tripwire_breaker_state_since_timestamp_seconds``) and why (``tripwire_breaker_state_info``)."""
    fam = GaugeMetricFamily("tripwire_breaker_state", "1 for the breaker's current state (scopes not closed only).",
                            labels=["scope", "state"])
    since = GaugeMetricFamily("tripwire_breaker_state_since_timestamp_seconds",
                              "When the scope's current (non-closed) breaker state began, Unix seconds.",
                              labels=["scope", "state", "drill"])
    info = GaugeMetricFamily("tripwire_breaker_state_info", "Always 1: the budget, reason and key evidence of a "
                             "non-closed breaker's current state.",
                             labels=["scope", "state", "budget", "reason", "evidence", "drill"])
    for scope, st in monitor.states.items():
        if st.state == CLOSED:
            continue
        for s in STATES:
            fam.add_metric([scope, s], 1.0 if st.state == s else 0.0)
        drill = "true" if st.drill else "false"
        since.add_metric([scope, st.state, drill], float(st.since))
        info.add_metric([scope, st.state, st.budget or "-", text_label(st.reason or "-"),
                         text_label(evidence_digest(st.evidence)), drill], 1.0)
    yield fam
    yield since
    yield info
