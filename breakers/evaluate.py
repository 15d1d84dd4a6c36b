"""Evaluate a policy's budgets for one scope against rolling evidence → verdicts.

Per budget and window rule: ``rate = bad / total`` (ratio signals) or ``bad / window``
(incident_count, cost), ``burn = rate / objective`` (amount signals: objective per period,
scaled to the window), and the rule fires when ``burn > burn_rate`` over the long AND the short
window, and the minimum evidence holds on the long window. Drift fires while the detector's
alarm is on (and the minimum number of flags+incidents holds).

A Poisson rule (``poisson_alpha`` instead of ``burn_rate``) fires when the raw bad count ``k`` is
improbable at the objective: ``P(X >= k | lam) < poisson_alpha`` with ``lam = objective × calls``
(``objective × window / period`` for ``incident_count``), over the long AND the short window, and
the minimum evidence holds on the long window (:mod:`detectors.poisson`). It is what lets a few
critical incidents trip a scope whose volume is too low for the rate rule's ``min_calls``.

``budget_remaining`` is the fraction of this PERIOD's budget still unspent, over the budget's
declared ``period`` (default 30 d, read from the rolling counts' 30-day ring):

* amount signals (``incident_count``, ``cost``): the objective is the amount per period, so
  ``remaining = 1 - amount_in_period / objective``;
* ratio signals: the period's budget is ``objective × the calls of the period``; the calls of a
  period not yet fully observed are extrapolated from the observed span (``observed_s``: the oldest
  counted bucket of the period to now, at that level's bucket width), so
  ``remaining = 1 - burn_period × min(1, observed_s / period)``. Three days exactly at the objective
  leave 90 % of a 30-day budget; 30 min at 1.67× leave 99.9 %. A reader without ``observed_s``
  counts the whole period as observed (``1 - burn_period``: lower, the safe side).

It goes negative when the period's budget is overspent. ``None`` when the rolling windows cannot
serve the period (longer than their 30-day ring).

Pure and cheap: one ``window_counts`` call per distinct (scope, window) per evaluation. The
counter names, the Wilson bound and the window labels come from ``detectors`` (one owner each).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from detectors.durations import format_duration
from detectors.keys import (
    COST_USD,
    ERRORS,
    INCIDENTS,
    INCIDENTS_CRITICAL,
    LLM_CALLS,
    NEAR_MISSES,
    NEAR_MISSES_WEIGHTED,
    TOOL_CALLS,
)
from detectors.poisson import poisson_tail
from detectors.rates import wilson_lower

from .evidence import EvidenceReader
from .policy import ACTION_RANK, AMOUNT_SIGNALS, Budget, Policy, WindowRule

__all__ = ["Verdict", "evaluate", "evaluate_budget", "wilson_lower"]

# signal → (bad key, raw bad key for min evidence, denominator keys)
_SIGNALS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "near_miss_rate": (NEAR_MISSES, NEAR_MISSES, (TOOL_CALLS,)),
    "weighted_near_miss_rate": (NEAR_MISSES_WEIGHTED, NEAR_MISSES, (TOOL_CALLS,)),
    "incident_rate": (INCIDENTS, INCIDENTS, (TOOL_CALLS,)),
    "critical_incident_rate": (INCIDENTS_CRITICAL, INCIDENTS_CRITICAL, (TOOL_CALLS,)),
    "error_rate": (ERRORS, ERRORS, (TOOL_CALLS, LLM_CALLS)),
    "incident_count": (INCIDENTS, INCIDENTS, ()),
    "cost": (COST_USD, COST_USD, ()),
}
_LABEL = {
    "near_miss_rate": "near-miss",
    "weighted_near_miss_rate": "weighted near-miss",
    "incident_rate": "incident",
    "critical_incident_rate": "critical-incident",
    "error_rate": "error",
    "incident_count": "incident-count",
    "cost": "cost",
    "drift": "drift",
}
_EPS = 1e-9


@dataclass(slots=True)
class Verdict:
    """The outcome of one budget for one scope."""

    budget: str
    scope: str
    signal: str
    fired: bool
    action: str | None  # open | escalate | shadow when fired, else None
    severity: str | None  # page | ticket when fired
    burn_rates: dict[str, float]  # window label ('1h') → burn rate
    budget_remaining: float | None  # fraction of the period's budget unspent (see the module docstring)
    remaining_window_s: int | None  # the budget period it is measured over
    evidence: dict[str, dict[str, float]]  # window label → counts
    reason: str
    rule: str | None = None  # e.g. '14.4x over 1h+5m'
    min_evidence_met: bool = False
    #: per rule long window label: does the budget's minimum evidence hold there (what a rule needs to fire)
    evidence_sufficient: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _fmt(x: float) -> str:
    return f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


class _Counts:
    """Per-evaluation cache of window_counts for one scope."""

    __slots__ = ("reader", "scope", "cache")

    def __init__(self, reader: EvidenceReader, scope: str):
        self.reader, self.scope, self.cache = reader, scope, {}

    def get(self, window_s: int) -> Mapping[str, float]:
        hit = self.cache.get(window_s)
        if hit is None:
            hit = self.cache[window_s] = self.reader.window_counts(self.scope, window_s)
        return hit


def _burn(budget: Budget, counts: Mapping[str, float], window_s: int) -> float:
    bad_key, _, denom_keys = _SIGNALS[budget.signal]
    bad = float(counts.get(bad_key, 0) or 0)
    objective = float(budget.objective or 1.0)
    if budget.signal in AMOUNT_SIGNALS:
        return bad / (objective * window_s / budget.period)
    total = sum(float(counts.get(k, 0) or 0) for k in denom_keys)
    return (bad / total) / objective if total > 0 else 0.0


def _tail(budget: Budget, counts: Mapping[str, float], window_s: int) -> tuple[float, float, float]:
    """(k, lam, P(X >= k | lam)) of a Poisson rule over one window."""
    _, raw_key, denom_keys = _SIGNALS[budget.signal]
    k = float(counts.get(raw_key, 0) or 0)
    objective = float(budget.objective or 0.0)
    if budget.signal in AMOUNT_SIGNALS:
        lam = objective * window_s / budget.period
    else:
        lam = objective * sum(float(counts.get(c, 0) or 0) for c in denom_keys)
    return k, lam, poisson_tail(k, lam)


def _period_remaining(budget: Budget, counts: _Counts, reader: EvidenceReader, scope: str) -> float | None:
    """Fraction of this period's budget still unspent (module docstring); None if the period cannot be read."""
    period = int(budget.period)
    try:
        c = counts.get(period)
    except ValueError:  # the rolling windows cannot serve this period
        return None
    burn = _burn(budget, c, period)
    if budget.signal in AMOUNT_SIGNALS:
        return 1.0 - burn
    observed = getattr(reader, "observed_s", None)
    span = observed(scope, period) if callable(observed) else None
    share = 1.0 if span is None else min(1.0, max(0.0, float(span)) / period)
    return 1.0 - burn * share


def _p(x: float) -> str:
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"


def _evidence_ok(budget: Budget, counts: Mapping[str, float]) -> tuple[bool, str]:
    bad_key, raw_key, denom_keys = _SIGNALS[budget.signal]
    me = budget.min_evidence
    raw = float(counts.get(raw_key, 0) or 0)
    total = sum(float(counts.get(k, 0) or 0) for k in denom_keys)
    if raw < me.min_bad:
        return False, f"only {_num(raw)} bad events (< {_num(me.min_bad)})"
    if denom_keys and total < me.min_calls:
        return False, f"only {_num(total)} calls (< {me.min_calls})"
    if me.confidence is not None and denom_keys:
        lower = wilson_lower(min(raw, total), total, me.confidence)
        if budget.signal == "weighted_near_miss_rate" and raw > 0:
            lower *= float(counts.get(bad_key, 0) or 0) / raw  # scale by mean weight
        if lower <= float(budget.objective or 0):
            return False, f"rate not above objective at {me.confidence:.0%} confidence"
    return True, ""


def _rule_action(budget: Budget, rule: WindowRule) -> str:
    if rule.action is not None:
        return rule.action
    return budget.action if rule.severity == "page" else "shadow"


class _Plan:
    """What one budget's evaluation needs that never changes with the evidence (built once per budget)."""

    __slots__ = ("windows", "labels", "rules", "longest", "longest_label", "period_ok")

    def __init__(self, budget: Budget) -> None:
        self.windows = sorted({w for r in budget.windows for w in (r.long, r.short) if w is not None})
        self.labels = {w: format_duration(w) for w in self.windows}
        #: per rule: (rule, long label, short label or None, (action rank, severity rank))
        self.rules = [(r, format_duration(r.long), format_duration(r.short) if r.short else None,
                       (ACTION_RANK[_rule_action(budget, r)], 2 if r.severity == "page" else 1))
                      for r in budget.windows]
        self.longest = budget.longest_window
        self.longest_label = format_duration(self.longest)


_PLANS: dict[int, tuple[Budget, _Plan]] = {}


def _plan(budget: Budget) -> _Plan:
    hit = _PLANS.get(id(budget))
    if hit is None or hit[0] is not budget:
        if len(_PLANS) > 4096:  # policies reloaded many times: start over
            _PLANS.clear()
        hit = _PLANS[id(budget)] = (budget, _Plan(budget))
    return hit[1]


def evaluate_budget(budget: Budget, scope: str, reader: EvidenceReader, _counts: _Counts | None = None,
                    detail: bool = True, figures: bool = True) -> Verdict:
    """Evaluate one budget for one scope.

    ``detail=False``: the same decision and figures (``fired``, ``action``, ``severity``, ``burn_rates``,
    ``budget_remaining``, ``evidence_sufficient``) without the reason text, the evidence copies and the
    rule text, which only a transition records (the engine evaluates in detail when a step moves).
    ``figures=False`` (with ``detail=False``): the decision only — ``fired``, ``action``, ``severity`` and,
    when it fires, ``burn_rates`` (what :func:`breakers.state_machine.step` reads); a rule whose minimum
    evidence fails or whose long window is not hot reads no other window, and nothing reads the period
    (``budget_remaining`` None). The backtest keeps no figures.
    """
    counts = _counts or _Counts(reader, scope)
    label = _LABEL[budget.signal]
    plan = _plan(budget)
    windows = plan.windows
    evidence = {plan.labels[w]: dict(counts.get(w)) for w in windows} if detail else {}

    if budget.signal == "drift":
        longest = counts.get(budget.longest_window)
        raw = float(longest.get(NEAR_MISSES, 0) or 0) + float(longest.get(INCIDENTS, 0) or 0)
        active = bool(reader.drift_active(scope))
        enough = raw >= budget.min_evidence.min_bad
        fired = active and enough
        if not detail:
            reason = ""
        elif fired:
            reason = f"drift detected; {_num(raw)} flags+incidents over {format_duration(budget.longest_window)}"
        elif active:
            reason = f"drift detected but only {_num(raw)} flags+incidents (< {_num(budget.min_evidence.min_bad)})"
        else:
            reason = "no drift"
        return Verdict(budget.name, scope, budget.signal, fired, budget.action if fired else None,
                       "page" if fired and budget.action != "shadow" else ("ticket" if fired else None),
                       {}, None, None, evidence, reason, "drift" if fired else None, enough)

    if not (figures or detail):
        return _decide(budget, scope, counts, plan)
    burns = {plan.labels[w]: _burn(budget, counts.get(w), w) for w in windows}
    best: tuple[int, int, WindowRule] | None = None
    near_miss_reason = ""
    any_evidence = False
    tails: dict[int, tuple[float, float, float]] = {}
    sufficient: dict[str, bool] = {}
    for rule, long_l, short_l, rank in plan.rules:
        ok, why = _evidence_ok(budget, counts.get(rule.long))
        any_evidence = any_evidence or ok
        sufficient[long_l] = ok
        if rule.poisson_alpha is not None:
            for w in (rule.long, rule.short):
                if w is not None and w not in tails:
                    tails[w] = _tail(budget, counts.get(w), w)
            long_hot = tails[rule.long][2] < rule.poisson_alpha
            short_hot = rule.short is None or tails[rule.short][2] < rule.poisson_alpha
        else:
            assert rule.burn_rate is not None  # the policy validates one of the two
            long_hot = burns[long_l] > rule.burn_rate + _EPS
            short_hot = short_l is None or burns[short_l] > rule.burn_rate + _EPS
        if long_hot and short_hot and not ok and not near_miss_reason:
            near_miss_reason = why
        if long_hot and short_hot and ok:
            if best is None or rank > best[:2]:
                best = (rank[0], rank[1], rule)

    left = _period_remaining(budget, counts, reader, scope)
    if best is None:
        if not detail:
            return Verdict(budget.name, scope, budget.signal, False, None, None, burns, left, budget.period,
                           evidence, "", None, any_evidence, sufficient)
        tally = _tally(budget, counts.get(plan.longest), plan.longest_label)
        top = max(burns.values(), default=0.0)
        reason = f"{label} burn ≤ thresholds (max {_fmt(top)}×); {tally}"
        if tails and len(tails) == len(windows):  # Poisson rules only: say how probable the count is
            w = min(tails, key=lambda x: tails[x][2])
            k, lam, p = tails[w]
            reason = f"{label} count {_num(k)} not improbable: P(X≥{_num(k)} | λ={lam:.3g}) = {_p(p)} over {format_duration(w)}; {tally}"
        if near_miss_reason:
            what = "count improbable" if tails else "burn over threshold"
            reason = f"{label} {what} but minimum evidence not met: {near_miss_reason}; {tally}"
        return Verdict(budget.name, scope, budget.signal, False, None, None, burns, left, budget.period,
                       evidence, reason, None, any_evidence, sufficient)

    rule = best[2]
    if not detail:
        return Verdict(budget.name, scope, budget.signal, True, _rule_action(budget, rule), rule.severity, burns,
                       left, budget.period, evidence, "", None, True, sufficient)
    long_l = format_duration(rule.long)
    span = long_l + (f"+{format_duration(rule.short)}" if rule.short else "")
    if rule.poisson_alpha is not None:
        k, lam, p = tails[rule.long]
        text = (f"{label} count {_num(k)} improbable at the objective: P(X≥{_num(k)} | λ={lam:.3g}) = {_p(p)} "
                f"< {rule.poisson_alpha:g} over {long_l}")
        if rule.short is not None:
            text += f" and {_p(tails[rule.short][2])} over {format_duration(rule.short)}"
        rule_s = f"P<{rule.poisson_alpha:g} over {span}"
    else:
        text = f"{label} burn {_fmt(burns[long_l])}× over {long_l} (>{_fmt(rule.burn_rate)})"
        if rule.short is not None:
            short_l = format_duration(rule.short)
            text += f" and {_fmt(burns[short_l])}× over {short_l}"
        rule_s = f"{_fmt(rule.burn_rate)}x over {span}"
    text += f"; {_tally(budget, counts.get(rule.long), long_l)}"
    return Verdict(budget.name, scope, budget.signal, True, _rule_action(budget, rule), rule.severity, burns,
                   left, budget.period, evidence, text, rule_s, True, sufficient)


def _hot(budget: Budget, rule: WindowRule, counts: _Counts) -> bool:
    """Does ``rule`` burn (or is its count improbable) over its long AND its short window? Long first."""
    if rule.poisson_alpha is not None:
        alpha = rule.poisson_alpha
        return (_tail(budget, counts.get(rule.long), rule.long)[2] < alpha
                and (rule.short is None or _tail(budget, counts.get(rule.short), rule.short)[2] < alpha))
    assert rule.burn_rate is not None  # the policy validates one of the two
    threshold = rule.burn_rate + _EPS
    return (_burn(budget, counts.get(rule.long), rule.long) > threshold
            and (rule.short is None or _burn(budget, counts.get(rule.short), rule.short) > threshold))


def _decide(budget: Budget, scope: str, counts: _Counts, plan: _Plan) -> Verdict:
    """:func:`evaluate_budget` with ``figures=False, detail=False``: the same choice of rule, fewer reads."""
    best: tuple[int, int, WindowRule] | None = None
    for rule, _, _, rank in plan.rules:
        if best is not None and rank <= best[:2]:
            continue  # cannot beat the rule already chosen (ties go to the first, as in evaluate_budget)
        if _evidence_ok(budget, counts.get(rule.long))[0] and _hot(budget, rule, counts):
            best = (rank[0], rank[1], rule)
    if best is None:
        return Verdict(budget.name, scope, budget.signal, False, None, None, {}, None, budget.period, {}, "")
    rule = best[2]
    burns = {plan.labels[w]: _burn(budget, counts.get(w), w) for w in plan.windows}
    return Verdict(budget.name, scope, budget.signal, True, _rule_action(budget, rule), rule.severity, burns,
                   None, budget.period, {}, "", None, True)


def _tally(budget: Budget, c: Mapping[str, float], window_label: str) -> str:
    g = lambda k: float(c.get(k, 0) or 0)  # noqa: E731
    s = budget.signal
    if s in ("near_miss_rate", "weighted_near_miss_rate"):
        return f"{_num(g(NEAR_MISSES))} flags / {_num(g(TOOL_CALLS))} calls in {window_label}"
    if s == "incident_rate":
        return f"{_num(g(INCIDENTS))} incidents / {_num(g(TOOL_CALLS))} calls in {window_label}"
    if s == "critical_incident_rate":
        return f"{_num(g(INCIDENTS_CRITICAL))} critical incidents / {_num(g(TOOL_CALLS))} calls in {window_label}"
    if s == "error_rate":
        return f"{_num(g(ERRORS))} errors / {_num(g(TOOL_CALLS) + g(LLM_CALLS))} calls in {window_label}"
    if s == "incident_count":
        return f"{_num(g(INCIDENTS))} incidents in {window_label}"
    return f"${g(COST_USD):.2f} in {window_label}"


def evaluate(policy: Policy, scope: str, reader: EvidenceReader, detail: bool = True,
             figures: bool = True) -> list[Verdict]:
    """Verdicts of every budget of ``policy`` that applies to ``scope`` (``detail``, ``figures``: see
    :func:`evaluate_budget`).

    >>> from breakers.policy import parse_policy
    >>> from breakers.evidence import StaticEvidence
    >>> p = parse_policy("budgets: [{name: nm, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.01}]")
    >>> ev = StaticEvidence().set_all("agent:a", [300, 3600, 1800, 21600, 259200], tool_calls=40, near_misses=10)
    >>> v = evaluate(p, "agent:a", ev)[0]
    >>> v.fired, v.action, v.reason
    (True, 'open', 'near-miss burn 25.0× over 1h (>14.4) and 25.0× over 5m; 10 flags / 40 calls in 1h')
    """
    budgets = policy.budgets_for(scope)
    if not budgets:
        return []
    counts = _Counts(reader, scope)
    return [evaluate_budget(b, scope, reader, counts, detail, figures) for b in budgets]
