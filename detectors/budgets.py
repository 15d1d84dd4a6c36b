"""Multi-window, multi-burn-rate error budgets (Google SRE workbook, ch. 5).

A :class:`BudgetSpec` names a counted signal from
:meth:`RollingCounts.window_counts <detectors.counts.RollingCounts.window_counts>`:

* **ratio** signal (``total`` set, e.g. ``near_misses / tool_calls``):
  ``objective`` is the allowed bad ratio (the error budget);
  ``burn = (bad / total over window) / objective``;
  ``budget_remaining = 1 - bad_period / (objective * total_period)``.
* **absolute** signal (``total=None``, e.g. ``cost_usd`` or ``incidents``):
  ``objective`` is the amount allowed per ``period_s``;
  ``burn = (bad / window_s) / (objective / period_s)``;
  ``budget_remaining = 1 - bad_period / objective``.

Burn 1 spends the budget exactly over the period. ``budget_remaining`` can go
negative (overspent). An alert fires when both its long and short window burn
at or above its threshold and the long window passes the minimum-evidence
rule (ratio signals: :class:`~detectors.rates.EvidenceRule` against the
objective; absolute signals: at least ``min_bad`` in the long window).

>>> spec = BudgetSpec("near_misses", "tool_calls", objective=0.01)
>>> w = {300: {"near_misses": 3, "tool_calls": 10}, 3600: {"near_misses": 30, "tool_calls": 100},
...      1800: {"near_misses": 0, "tool_calls": 0}, 21600: {"near_misses": 30, "tool_calls": 1000},
...      259200: {"near_misses": 30, "tool_calls": 10000}}
>>> st = evaluate_budget(spec, w, period_counts={"near_misses": 30, "tool_calls": 10000})
>>> [(a.severity, a.long_window, a.short_window, a.burn_long, a.burn_short) for a in st.alerts]
[('page', 3600, 300, 30.0, 30.0)]
>>> round(st.budget_remaining, 6)
0.7
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from detectors.rates import EvidenceRule

__all__ = [
    "BurnRule",
    "BudgetSpec",
    "BurnAlert",
    "BudgetStatus",
    "DEFAULT_BURN_RULES",
    "burn_rate",
    "budget_remaining",
    "evaluate_budget",
    "evaluate_counts",
    "window_label",
]

HOUR = 3600
DAY = 86400


@dataclass(frozen=True)
class BurnRule:
    """Alert when burn over ``long_window`` AND ``short_window`` is >= ``threshold``."""

    severity: str
    long_window: int
    short_window: int
    threshold: float


#: SRE workbook defaults for a 30-day period.
DEFAULT_BURN_RULES: tuple[BurnRule, ...] = (
    BurnRule("page", HOUR, 300, 14.4),
    BurnRule("page", 6 * HOUR, 1800, 6.0),
    BurnRule("ticket", 3 * DAY, 6 * HOUR, 1.0),
)


@dataclass(frozen=True)
class BudgetSpec:
    """One risk budget over a counted signal (see module docstring)."""

    bad: str
    total: Optional[str] = None
    objective: float = 0.01
    period_s: int = 30 * DAY
    rules: tuple[BurnRule, ...] = DEFAULT_BURN_RULES
    evidence: EvidenceRule = field(default_factory=EvidenceRule)
    min_bad: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.objective <= 0:
            raise ValueError("objective must be > 0")

    @property
    def is_ratio(self) -> bool:
        return self.total is not None

    @property
    def windows(self) -> tuple[int, ...]:
        """All windows the rules need (sorted)."""
        return tuple(sorted({w for r in self.rules for w in (r.long_window, r.short_window)}))


@dataclass(frozen=True, slots=True)
class BurnAlert:
    """A firing burn-rate rule; windows in seconds."""

    severity: str
    long_window: int
    short_window: int
    burn_long: float
    burn_short: float
    threshold: float


@dataclass(frozen=True)
class BudgetStatus:
    """Result of :func:`evaluate_budget`: alerts (pages first), burn per window, budget left."""

    alerts: list[BurnAlert]
    burn_rates: dict[int, float]
    budget_remaining: Optional[float]
    evidence_ok: dict[int, bool]

    @property
    def severity(self) -> Optional[str]:
        """``"page"``, ``"ticket"`` or ``None``."""
        sev = {a.severity for a in self.alerts}
        return "page" if "page" in sev else ("ticket" if "ticket" in sev else None)


def _get(c: Mapping[str, Any], key: str) -> float:
    return float(c.get(key, 0.0) or 0.0)


def burn_rate(spec: BudgetSpec, counts: Mapping[str, Any], window_s: float) -> float:
    """Burn rate of ``spec`` for one window's counts (0 when there is no traffic)."""
    bad = _get(counts, spec.bad)
    if spec.total is not None:
        tot = _get(counts, spec.total)
        return (bad / tot) / spec.objective if tot > 0 else 0.0
    return (bad / window_s) / (spec.objective / spec.period_s)


def budget_remaining(spec: BudgetSpec, period_counts: Mapping[str, Any]) -> float:
    """Fraction of the period's budget left (1 = untouched, < 0 = overspent)."""
    bad = _get(period_counts, spec.bad)
    if spec.total is not None:
        allowed = spec.objective * _get(period_counts, spec.total)
        if allowed <= 0:
            return 1.0 if bad <= 0 else 0.0
        return 1.0 - bad / allowed
    return 1.0 - bad / spec.objective


def _evidence(spec: BudgetSpec, counts: Mapping[str, Any]) -> bool:
    bad = _get(counts, spec.bad)
    if spec.total is None:
        return bad >= spec.min_bad
    tot = _get(counts, spec.total)
    if tot <= 0 or bad > tot:
        return False
    return spec.evidence.exceeded(bad, tot, spec.objective)


def evaluate_budget(
    spec: BudgetSpec,
    windows: Mapping[int, Mapping[str, Any]],
    period_counts: Optional[Mapping[str, Any]] = None,
) -> BudgetStatus:
    """Burn alerts for one scope from its window counts (``{window_s: counts}``).

    Windows a rule needs but that are missing count as zero traffic.
    ``period_counts`` (counts over ``spec.period_s``) gives ``budget_remaining``.
    """
    burns: dict[int, float] = {}
    ev_ok: dict[int, bool] = {}
    empty: Mapping[str, Any] = {}
    for w in spec.windows:
        c = windows.get(w, empty)
        burns[w] = burn_rate(spec, c, w)
    alerts = []
    for r in spec.rules:
        bl, bs = burns[r.long_window], burns[r.short_window]
        if bl >= r.threshold and bs >= r.threshold:
            ok = ev_ok.get(r.long_window)
            if ok is None:
                ok = ev_ok[r.long_window] = _evidence(spec, windows.get(r.long_window, empty))
            if ok:
                alerts.append(BurnAlert(r.severity, r.long_window, r.short_window, bl, bs, r.threshold))
    alerts.sort(key=lambda a: (a.severity != "page", a.long_window))
    rem = None if period_counts is None else budget_remaining(spec, period_counts)
    return BudgetStatus(alerts, burns, rem, ev_ok)


def evaluate_counts(spec: BudgetSpec, counts: Any, now: float) -> BudgetStatus:
    """:func:`evaluate_budget` reading windows straight from a ``RollingCounts``."""
    ws = {w: counts.window_counts(w, now) for w in spec.windows}
    return evaluate_budget(spec, ws, counts.window_counts(spec.period_s, now))


_UNITS = ((DAY, "d"), (HOUR, "h"), (60, "m"), (1, "s"))


def window_label(window_s: float) -> str:
    """Prometheus-style label for a window: ``300 -> "5m"``, ``259200 -> "3d"``.

    >>> [window_label(w) for w in (300, 1800, 3600, 21600, 86400, 259200, 90)]
    ['5m', '30m', '1h', '6h', '1d', '3d', '90s']
    """
    w = int(window_s)
    for size, unit in _UNITS:
        if w % size == 0:
            return f"{w // size}{unit}"
    return f"{w}s"


def rules_from_config(rules: Sequence[Mapping[str, Any]]) -> tuple[BurnRule, ...]:
    """Build rules from plain dicts ``{"severity", "long_window", "short_window", "threshold"}``."""
    return tuple(BurnRule(str(r["severity"]), int(r["long_window"]), int(r["short_window"]), float(r["threshold"])) for r in rules)
