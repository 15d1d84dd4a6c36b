"""Which actions a policy's budgets fire for many scopes at once, or "cannot tell here" (numpy).

A screening pass for evaluators that look at hundreds of scopes per tick (the backtest): given the
window sums of every scope (:class:`detectors.batch.RingBatch`), it computes, per scope, the set of
actions (``open``, ``escalate``, ``shadow``) that :func:`breakers.evaluate.evaluate` would fire — or
``None`` when it cannot be sure. It is sure only away from every threshold: comparisons that involve a
float counter (weighted near-misses, cost: summed in another order than the exact read) keep a
relative margin of :data:`MARGIN`, a minimum-evidence ``confidence`` gate and Poisson rules are left to
the exact evaluation, and a rule that *may* fire but is not certain to makes the scope undecided.
An undecided scope goes through the exact evaluation; a decided one can skip it when its state is
settled for those actions (:func:`breakers.state_machine.settled`).

Same formulas as :mod:`breakers.evaluate` (one owner of the signal table: ``_SIGNALS`` there).

>>> import numpy as np
>>> from breakers.policy import parse_policy
>>> p = parse_policy("budgets: [{name: nm, signal: near_miss_rate, scopes: ['agent:*'], objective: 0.01}]")
>>> budgets = p.budgets_for("agent:a")
>>> sums = {w: {"tool_calls": np.array([40.0, 40.0, 40.0]), "near_misses": np.array([10.0, 0.0, 6.0])}
...         for w in (300, 3600, 21600, 1800, 259200)}
>>> screen(budgets, sums, np.zeros(3, dtype=bool))
[frozenset({'open'}), frozenset(), frozenset({'open'})]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from detectors.keys import FLOAT_KEYS, INCIDENTS, NEAR_MISSES

from .evaluate import _EPS, _SIGNALS, _rule_action
from .policy import ACTION_RANK, AMOUNT_SIGNALS, Budget

__all__ = ["MARGIN", "needed_sums", "screen"]

#: relative margin kept around a threshold when a float counter is involved (sums may differ in the last bits)
MARGIN = 1e-7

Sums = Mapping[int, Mapping[str, np.ndarray]]


def needed_sums(budgets: Sequence[Budget]) -> dict[int, list[str]]:
    """window_s → the counters :func:`screen` reads for these budgets."""
    need: dict[int, set[str]] = {}
    for b in budgets:
        if b.signal == "drift":
            need.setdefault(b.longest_window, set()).update((NEAR_MISSES, INCIDENTS))
            continue
        bad_key, raw_key, denom_keys = _SIGNALS[b.signal]
        for r in b.windows:
            for w in (r.long, r.short):
                if w is not None:
                    need.setdefault(w, set()).update((bad_key, raw_key, *denom_keys))
    return {w: sorted(keys) for w, keys in need.items()}


def _cmp(x: np.ndarray, threshold: float, fuzzy: bool, strict: bool) -> tuple[np.ndarray, np.ndarray]:
    """(certainly, possibly) ``x > threshold`` (``strict``) or ``x >= threshold``, with a margin when ``fuzzy``."""
    m = MARGIN * max(1.0, abs(threshold)) if fuzzy else 0.0
    if strict:
        return x > threshold + m, x > threshold - m
    return x >= threshold + m, x >= threshold - m


def _burn(budget: Budget, c: Mapping[str, np.ndarray], window_s: int) -> np.ndarray:
    """:func:`breakers.evaluate._burn`, elementwise (same operations in the same order)."""
    bad_key, _, denom_keys = _SIGNALS[budget.signal]
    bad = c[bad_key]
    objective = float(budget.objective or 1.0)
    if budget.signal in AMOUNT_SIGNALS:
        return bad / (objective * window_s / budget.period)
    total = sum((c[k] for k in denom_keys[1:]), c[denom_keys[0]])
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, (bad / safe) / objective, 0.0)


def _rule(budget: Budget, rule, sums: Sums) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """(certainly fires, possibly fires) for one window rule."""
    bad_key, raw_key, denom_keys = _SIGNALS[budget.signal]
    me = budget.min_evidence
    c = sums[rule.long]
    must, may = _cmp(c[raw_key], float(me.min_bad), raw_key in FLOAT_KEYS, strict=False)
    if denom_keys:
        total = sum((c[k] for k in denom_keys[1:]), c[denom_keys[0]])
        calls = total >= me.min_calls  # integer counters: exact
        must, may = must & calls, may & calls
        if me.confidence is not None:  # the Wilson gate is left to the exact evaluation
            must = np.zeros_like(must)
    if rule.poisson_alpha is not None:  # improbability is left to the exact evaluation
        return np.zeros_like(must), may
    fuzzy = bad_key in FLOAT_KEYS
    threshold = float(rule.burn_rate) + _EPS
    for w in (rule.long, rule.short):
        if w is None:
            continue
        hot_must, hot_may = _cmp(_burn(budget, sums[w], w), threshold, fuzzy, strict=True)
        must, may = must & hot_must, may & hot_may
    return must, may


def screen(budgets: Sequence[Budget], sums: Sums, drift_active: np.ndarray) -> list[frozenset[str] | None]:
    """Per scope, the actions the budgets fire (a frozenset, maybe empty), or None when not certain.

    ``sums``: window_s → counter → one value per scope (:func:`needed_sums` says which);
    ``drift_active``: per scope, is its drift signal on (what ``drift`` budgets read).
    """
    n = len(drift_active)
    unsure = np.zeros(n, dtype=bool)
    fired: dict[str, np.ndarray] = {}
    for b in budgets:
        if b.signal == "drift":
            c = sums[b.longest_window]
            hit = drift_active & (c[NEAR_MISSES] + c[INCIDENTS] >= b.min_evidence.min_bad)  # integer counts: exact
            fired[b.action] = fired.get(b.action, np.zeros(n, dtype=bool)) | hit
            continue
        # the verdict takes the best-ranked firing rule: walk the rules best first, the first certain one decides
        ranked = sorted(b.windows, key=lambda r: (ACTION_RANK[_rule_action(b, r)], 2 if r.severity == "page" else 1),
                        reverse=True)
        decided = np.zeros(n, dtype=bool)
        for rule in ranked:
            must, may = _rule(b, rule, sums)
            open_ = ~decided
            yes = open_ & must
            maybe = open_ & may & ~must
            action = _rule_action(b, rule)
            fired[action] = fired.get(action, np.zeros(n, dtype=bool)) | yes
            unsure |= maybe
            decided |= yes | maybe
    names = list(fired)
    codes = np.zeros(n, dtype=np.int64)  # per scope, bit k set: action names[k] fires
    for k, a in enumerate(names):
        codes |= fired[a].astype(np.int64) << k
    sets: dict[int, frozenset[str]] = {}  # one frozenset per combination of actions
    out: list[frozenset[str] | None] = []
    for u, code in zip(unsure.tolist(), codes.tolist()):
        if u:
            out.append(None)
            continue
        hit = sets.get(code)
        if hit is None:
            hit = sets[code] = frozenset(a for k, a in enumerate(names) if code >> k & 1)
        out.append(hit)
    return out
