"""Per-agent reliability metrics: pass@k / pass^k, MTBCE, intervene-to-success,
safe-refusal precision/recall, cost of confidence.

* **Reliability@K** (pass@k, unbiased): per task with ``n >= k`` attempts and
  ``c`` successes, ``1 - C(n-c, k) / C(n, k)``, averaged over tasks.
  **Consistency** pass^k (tau-bench): ``C(c, k) / C(n, k)`` averaged.
  Attempts come from ``task_outcome`` events (``task_id``, ``attempt``,
  ``outcome``); a repeated attempt number overwrites, ``attempt`` ``None`` (or
  > 64) takes the lowest free number. At most ``max_tasks`` tasks are kept
  (least recently updated evicted). Task family = ``task_id`` up to the first
  ``family_sep`` (``"airline:task0" -> "airline"``).
* **MTBCE**: exposure per consequential error (``incident``). Exposure is
  active time (sum of gaps between consecutive events, each capped at
  ``idle_gap_s``; out-of-order events add none) and tool calls. Interval:
  Garwood (chi-square) Poisson interval on the incident count.
* **intervene-to-success**: successful / all ``task_outcome`` with ``intervened=True``.
* **safe refusal** (event-level): ``refusal`` with ``should_refuse=True`` is a TP,
  with ``False`` a FP; any other kind carrying ``should_refuse=True`` (the agent
  acted where it should have refused) is a FN. Unlabelled events are ignored.
  Emitters should label one event per red-team insert.
* **cost of confidence**: spend = ``cost_usd + human_minutes / 60 * hourly_rate_usd``
  over every non-``task_outcome`` event (or only ``task_outcome`` totals with
  ``task_totals=True``). ``spend_per_success`` = spend / successful outcomes;
  ``spend_to_confidence`` = ``k * spend / attempts`` with the least ``k`` such
  that ``1 - (1 - p)^k >= confidence``, ``p`` = per-attempt success rate.

Read methods return plain floats / dicts; ``None`` where undefined.

>>> from detectors.testing import Ev
>>> r = AgentReliability()
>>> for task, outs in {"x:1": "SSF", "x:2": "FFF", "x:3": "SSS"}.items():
...     for a, o in enumerate(outs, 1):
...         r.update(Ev("task_outcome", float(a), task_id=task, attempt=a,
...                     outcome="success" if o == "S" else "failure"))
>>> [round(r.pass_at_k(k), 4) for k in (1, 2, 3)]
[0.5556, 0.6667, 0.6667]
>>> [round(r.pass_hat_k(k), 4) for k in (1, 2, 3)]
[0.5556, 0.4444, 0.3333]
"""

from __future__ import annotations

import math
from collections import OrderedDict
from math import comb
from typing import Any, Mapping, Optional

from detectors.base import Detector
from detectors.config import ReliabilityConfig

__all__ = ["AgentReliability", "pass_at_k", "pass_hat_k", "attempts_for_confidence"]

_MAXBIT = 64
_COUNTERS = (
    "tool_calls",
    "incidents",
    "active_s",
    "spend_usd",
    "human_minutes",
    "attempts",
    "successes",
    "iv_n",
    "iv_success",
    "tp",
    "fp",
    "fn",
    "tn",
    "evicted",
)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task: ``1 - C(n-c, k) / C(n, k)`` (needs ``n >= k``).

    >>> pass_at_k(4, 1, 2)
    0.5
    """
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k of one task: ``C(c, k) / C(n, k)`` (needs ``n >= k``).

    >>> round(pass_hat_k(4, 3, 2), 4)
    0.5
    """
    return comb(c, k) / comb(n, k)


def attempts_for_confidence(p: float, confidence: float) -> Optional[int]:
    """Least ``k`` with ``1 - (1 - p)^k >= confidence`` (``None`` if ``p == 0``).

    >>> attempts_for_confidence(0.42, 0.995)
    10
    """
    if p <= 0.0:
        return None
    if p >= 1.0:
        return 1
    k = math.ceil(math.log(1.0 - confidence) / math.log(1.0 - p) - 1e-12)
    return max(1, k)


class AgentReliability(Detector):
    """Reliability metrics of one agent (see module docstring)."""

    __slots__ = ("_cfg", "tasks", "c", "last_ts")

    def __init__(self, config: Optional[ReliabilityConfig] = None) -> None:
        self._cfg = config or ReliabilityConfig()
        #: task_id -> [attempt bitmask, success bitmask], LRU order
        self.tasks: OrderedDict[str, list[int]] = OrderedDict()
        self.c: dict[str, float] = dict.fromkeys(_COUNTERS, 0)
        self.last_ts: Optional[float] = None

    # ------------------------------------------------------------------ update
    def update(self, ev: Any) -> None:
        c = self.c
        ts = ev.ts
        last = self.last_ts
        if last is None:
            self.last_ts = ts
        elif ts > last:
            gap = ts - last
            idle = self._cfg.idle_gap_s
            c["active_s"] += gap if gap < idle else idle
            self.last_ts = ts
        kind = ev.kind
        if kind == "tool_call":
            c["tool_calls"] += 1
        elif kind == "incident":
            c["incidents"] += 1
        elif kind == "task_outcome":
            self._outcome(ev)
        sr = ev.should_refuse
        if sr is not None:
            if kind == "refusal":
                c["tp" if sr else "fp"] += 1
            else:
                c["fn" if sr else "tn"] += 1
        if (kind == "task_outcome") == self._cfg.task_totals:
            x = ev.cost_usd
            if x:
                c["spend_usd"] += x
            x = ev.human_minutes
            if x:
                c["human_minutes"] += x

    def _outcome(self, ev: Any) -> None:
        c = self.c
        ok = ev.outcome == "success"
        c["attempts"] += 1
        if ok:
            c["successes"] += 1
        if ev.intervened:
            c["iv_n"] += 1
            if ok:
                c["iv_success"] += 1
        tid = ev.task_id
        if tid is None:
            return
        tasks = self.tasks
        t = tasks.get(tid)
        if t is None:
            t = tasks[tid] = [0, 0]
            if len(tasks) > self._cfg.max_tasks:
                tasks.popitem(last=False)
                c["evicted"] += 1
        else:
            tasks.move_to_end(tid)
        a = ev.attempt
        if a is None or not 1 <= a <= _MAXBIT:
            free = ~t[0] & ((1 << _MAXBIT) - 1)
            if not free:
                return
            bit = free & -free
        else:
            bit = 1 << (a - 1)
        t[0] |= bit
        if ok:
            t[1] |= bit
        else:
            t[1] &= ~bit

    # ------------------------------------------------------------------ reads
    def family(self, task_id: str) -> str:
        sep = self._cfg.family_sep
        return task_id.split(sep, 1)[0] if sep and sep in task_id else task_id

    def _task_nc(self, family: Optional[str]) -> list[tuple[int, int]]:
        out = []
        for tid, (seen, succ) in self.tasks.items():
            if family is not None and self.family(tid) != family:
                continue
            out.append((seen.bit_count(), succ.bit_count()))
        return out

    def _avg(self, fn: Any, k: int, family: Optional[str]) -> Optional[float]:
        vals = [fn(n, c, k) for n, c in self._task_nc(family) if n >= k]
        return sum(vals) / len(vals) if vals else None

    def pass_at_k(self, k: int, family: Optional[str] = None) -> Optional[float]:
        """Reliability@K averaged over tasks with at least ``k`` attempts."""
        return self._avg(pass_at_k, k, family)

    def pass_hat_k(self, k: int, family: Optional[str] = None) -> Optional[float]:
        """Consistency pass^K averaged over tasks with at least ``k`` attempts."""
        return self._avg(pass_hat_k, k, family)

    def families(self) -> list[str]:
        return sorted({self.family(t) for t in self.tasks})

    def reliability(self, family: Optional[str] = None) -> dict[str, Any]:
        """``{"tasks", "pass_at_k": {k: v}, "pass_hat_k": {k: v}}`` for ``k = 1..max_k``."""
        ks = range(1, self._cfg.max_k + 1)
        return {
            "tasks": len(self._task_nc(family)),
            "pass_at_k": {k: self.pass_at_k(k, family) for k in ks},
            "pass_hat_k": {k: self.pass_hat_k(k, family) for k in ks},
        }

    def mtbce(self, confidence: Optional[float] = None) -> dict[str, Optional[float]]:
        """Mean exposure between consequential errors, with a Garwood interval.

        Keys: ``incidents``, ``active_hours``, ``tool_calls``, ``mtbce_hours``,
        ``mtbce_hours_lower``, ``mtbce_hours_upper``, ``mtbce_seconds``,
        ``tool_calls_per_incident`` (+ ``_lower``/``_upper``). Undefined
        (infinite) values are ``None``.
        """
        from detectors.rates import poisson_interval

        conf = confidence or self._cfg.interval_confidence
        k = self.c["incidents"]
        hours = self.c["active_s"] / 3600.0
        calls = self.c["tool_calls"]
        lo, hi = poisson_interval(k, conf)

        def ratio(x: float, d: float) -> Optional[float]:
            return x / d if d > 0 else None

        return {
            "incidents": float(k),
            "active_hours": hours,
            "tool_calls": float(calls),
            "mtbce_hours": ratio(hours, k),
            "mtbce_hours_lower": ratio(hours, hi),
            "mtbce_hours_upper": ratio(hours, lo),
            "mtbce_seconds": ratio(hours * 3600.0, k),
            "tool_calls_per_incident": ratio(calls, k),
            "tool_calls_per_incident_lower": ratio(calls, hi),
            "tool_calls_per_incident_upper": ratio(calls, lo),
        }

    def intervene_to_success(self) -> Optional[float]:
        """Successful share of task outcomes with ``intervened=True``."""
        n = self.c["iv_n"]
        return self.c["iv_success"] / n if n else None

    def safe_refusal(self) -> dict[str, Optional[float]]:
        """``{"precision", "recall", "tp", "fp", "fn"}`` (event-level rule, module docstring)."""
        tp, fp, fn = self.c["tp"], self.c["fp"], self.c["fn"]
        return {
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "tp": float(tp),
            "fp": float(fp),
            "fn": float(fn),
        }

    def cost_of_confidence(self, confidence: Optional[float] = None) -> dict[str, Optional[float]]:
        """Spend per success and spend to reach ``confidence`` that a task completes."""
        cfg = self._cfg
        conf = confidence or cfg.confidence
        c = self.c
        spend = c["spend_usd"] + c["human_minutes"] / 60.0 * cfg.hourly_rate_usd
        att, succ = c["attempts"], c["successes"]
        p = succ / att if att else None
        k = attempts_for_confidence(p, conf) if p is not None else None
        return {
            "spend_usd": spend,
            "attempts": float(att),
            "successes": float(succ),
            "p_success": p,
            "spend_per_success": spend / succ if succ else None,
            "confidence": conf,
            "attempts_needed": None if k is None else float(k),
            "spend_to_confidence": None if k is None else k * spend / att,
        }

    def metrics(self) -> dict[str, Any]:
        """Everything above in one dict (for export)."""
        return {
            **self.reliability(),
            "mtbce": self.mtbce(),
            "intervene_to_success": self.intervene_to_success(),
            "safe_refusal": self.safe_refusal(),
            "cost_of_confidence": self.cost_of_confidence(),
        }

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """``{"v", "tasks": [[task_id, attempt_mask, success_mask], ...] (LRU order), "c": {...}, "last"}``."""
        return {
            "v": self.STATE_VERSION,
            "tasks": [[k, v[0], v[1]] for k, v in self.tasks.items()],
            "c": dict(self.c),
            "last": self.last_ts,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: Optional[ReliabilityConfig] = None) -> "AgentReliability":
        cls._check_version(state)
        self = cls(config)
        self.tasks = OrderedDict((str(k), [int(a), int(b)]) for k, a, b in state["tasks"])
        self.c.update(state["c"])
        self.last_ts = state["last"]
        return self
