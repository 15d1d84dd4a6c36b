"""Per-agent reliability metrics: Reliability@K for retries and for trials, consistency
pass^k, MTBCE, intervene-to-success, safe-refusal precision/recall, cost of confidence.

Attempts come from ``task_outcome`` events (``task_id``, ``attempt``, ``outcome``,
optional ``attempt_kind``); a repeated attempt number overwrites, ``attempt``
``None`` (or > 64) takes the lowest free number. At most ``max_tasks`` tasks are
kept (least recently updated evicted). Task family = ``task_id`` up to the first
``family_sep`` (``"airline:task0" -> "airline"``).

* **Shape** of an agent's attempts (:meth:`AgentReliability.shape`): ``retry``
  (attempts stop at the first success) or ``trial`` (repeated independent
  trials of the same task). An override wins (the policy's
  ``reliability.attempt_kind``), then the producer's latest ``attempt_kind`` on a
  ``task_outcome``, then the data: ``trial`` as soon as a held task has an attempt
  after a success (retries never continue after a success), else ``retry``.
* **Reliability@K**, retry shape: share of tasks whose first success is at
  attempt ``<= K``, over tasks whose outcome within K is known: a success at
  ``<= K``; or no success at ``<= K`` and either an attempt numbered ``>= K``
  seen (retries stop at a success, so attempts 1..K all failed) or the task
  *settled* (no new attempt for ``settle_s`` of the agent's event time: it was
  given up). Other tasks are in flight and left out, not counted as failures.
  Trial shape: unbiased pass@k, per task with ``n >= k`` attempts and ``c``
  successes ``1 - C(n-c, k) / C(n, k)``, averaged over tasks.
* **Consistency** pass^k (trial shape only): ``C(c, k) / C(n, k)`` averaged.
  Retries stop at the first success, so "all K attempts succeed" is never
  observed for ``K >= 2``: :meth:`consistency_at_k` is ``None`` for retries.
* **MTBCE** = clock exposure ÷ material incidents. Exposure = the agent's
  latest event time − its first event time (idle gaps included). An incident is
  material when its ``severity`` is at or above the threshold (policy, default
  ``high``) or is unset (fail safe: counted). Interval: Garwood (chi-square)
  Poisson interval on the material count; with no material incident the
  point value and upper bound are ``inf`` and the lower bound is finite.
* **intervene-to-success** = successful ``task_outcome`` with
  ``intervened=True`` ÷ successful ``task_outcome`` (share of successes that
  needed a monitor or human).
* **safe refusal** (event-level): ``refusal`` with ``should_refuse=True`` is a TP,
  with ``False`` a FP; any other kind carrying ``should_refuse=True`` (the agent
  acted where it should have refused) is a FN. Unlabelled events are ignored.
  Emitters should label one event per red-team insert.
* **cost of confidence** = ``k_X * spend / attempts``: ``k_X`` is the least K
  whose Reliability@K (of the agent's shape, i.e. the observed
  attempts-to-success distribution) reaches the confidence ``X``; spend =
  ``cost_usd + human_minutes / 60 * hourly_rate_usd`` over every
  non-``task_outcome`` event (or only ``task_outcome`` totals with
  ``task_totals=True``). ``inf`` with reason ``unreachable`` when no observed K
  reaches ``X`` (e.g. 10 % of tasks never succeed and ``X`` = 95 %).

Read methods return plain floats / dicts; ``None`` where undefined.

>>> from detectors.testing import Ev
>>> r = AgentReliability()
>>> for task, outs in {"x:1": "SSF", "x:2": "FFF", "x:3": "SSS"}.items():
...     for a, o in enumerate(outs, 1):
...         r.update(Ev("task_outcome", float(a), task_id=task, attempt=a,
...                     outcome="success" if o == "S" else "failure"))
>>> r.shape()   # attempts continue after a success: repeated trials
('trial', 'detected')
>>> [round(r.reliability_at_k(k), 4) for k in (1, 2, 3)]
[0.5556, 0.6667, 0.6667]
>>> [round(r.consistency_at_k(k), 4) for k in (1, 2, 3)]
[0.5556, 0.4444, 0.3333]
>>> q = AgentReliability()   # retries: 2 first-time successes, 1 fail-then-succeed
>>> for i, outs in enumerate(["S", "S", "FS"]):
...     for a, o in enumerate(outs, 1):
...         q.update(Ev("task_outcome", 1.0, task_id=f"t{i}", attempt=a,
...                     outcome="success" if o == "S" else "failure"))
>>> q.shape(), round(q.reliability_at_k(1), 4), q.reliability_at_k(2), q.consistency_at_k(2)
(('retry', 'detected'), 0.6667, 1.0, None)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from math import comb
from typing import Any, Mapping, Optional

from detectors.base import Detector
from detectors.config import ReliabilityConfig

__all__ = [
    "AgentReliability",
    "ATTEMPT_KINDS",
    "SEVERITIES",
    "pass_at_k",
    "pass_hat_k",
    "least_k_reaching",
]

#: the two shapes of repeated attempts (``attempt_kind`` values, ``shape`` label values)
RETRY = "retry"
TRIAL = "trial"
ATTEMPT_KINDS: tuple[str, ...] = (RETRY, TRIAL)
#: event severities, least to most severe (the materiality threshold is one of them)
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")

_MAXBIT = 64
_INC = {s: f"inc_{s}" for s in SEVERITIES}
_COUNTERS = (
    "tool_calls",
    "incidents",
    *_INC.values(),
    "inc_unset",
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


def least_k_reaching(curve: Mapping[int, Optional[float]], confidence: float) -> Optional[int]:
    """Least ``k`` with ``curve[k] >= confidence`` (``None``: no observed ``k`` reaches it).

    >>> least_k_reaching({1: 0.5, 2: 0.9, 3: 0.96}, 0.95), least_k_reaching({1: 0.5, 2: 0.9}, 0.95)
    (3, None)
    """
    for k in sorted(curve):
        v = curve[k]
        if v is not None and v >= confidence - 1e-12:
            return k
    return None


def _low_bit(mask: int) -> int:
    """1-based index of the lowest set bit (0 for an empty mask)."""
    return (mask & -mask).bit_length()


class AgentReliability(Detector):
    """Reliability metrics of one agent (see module docstring)."""

    __slots__ = ("_cfg", "tasks", "c", "first_ts", "last_ts", "declared")

    def __init__(self, config: Optional[ReliabilityConfig] = None) -> None:
        self._cfg = config or ReliabilityConfig()
        #: task_id -> [attempt bitmask, success bitmask, event time of its latest attempt], LRU order
        self.tasks: OrderedDict[str, list[Any]] = OrderedDict()
        self.c: dict[str, float] = dict.fromkeys(_COUNTERS, 0)
        self.first_ts: Optional[float] = None
        self.last_ts: Optional[float] = None
        #: the latest ``attempt_kind`` a producer set on a ``task_outcome`` (None: never)
        self.declared: Optional[str] = None

    # ------------------------------------------------------------------ update
    def update(self, ev: Any) -> None:
        c = self.c
        ts = ev.ts
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        kind = ev.kind
        if kind == "tool_call":
            c["tool_calls"] += 1
        elif kind == "incident":
            c["incidents"] += 1
            c[_INC.get(ev.severity, "inc_unset")] += 1
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
        ak = getattr(ev, "attempt_kind", None)
        if ak in ATTEMPT_KINDS:
            self.declared = ak
        tid = ev.task_id
        if tid is None:
            return
        tasks = self.tasks
        t = tasks.get(tid)
        if t is None:
            t = tasks[tid] = [0, 0, ev.ts]
            if len(tasks) > self._cfg.max_tasks:
                tasks.popitem(last=False)
                c["evicted"] += 1
        else:
            tasks.move_to_end(tid)
            if ev.ts > t[2]:
                t[2] = ev.ts
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

    def _held(self, family: Optional[str]) -> list[list[Any]]:
        return [t for tid, t in self.tasks.items() if family is None or self.family(tid) == family]

    def _task_nc(self, family: Optional[str]) -> list[tuple[int, int]]:
        return [(seen.bit_count(), succ.bit_count()) for seen, succ, _ in self._held(family)]

    def continued_tasks(self, family: Optional[str] = None) -> int:
        """Held tasks with an attempt after a success (impossible for retries: evidence of trials)."""
        n = 0
        for seen, succ, _ in self._held(family):
            s = _low_bit(succ)
            if s and seen >> s:
                n += 1
        return n

    def shape(self, override: Optional[str] = None) -> tuple[str, str]:
        """``(shape, source)``: shape ``retry`` | ``trial``; source ``policy`` (``override``),
        ``declared`` (the producer's ``attempt_kind``) or ``detected`` (from the data)."""
        if override in ATTEMPT_KINDS:
            return override, "policy"
        if self.declared in ATTEMPT_KINDS:
            return self.declared, "declared"
        return (TRIAL if self.continued_tasks() else RETRY), "detected"

    def _avg(self, fn: Any, k: int, family: Optional[str]) -> Optional[float]:
        vals = [fn(n, c, k) for n, c in self._task_nc(family) if n >= k]
        return sum(vals) / len(vals) if vals else None

    def pass_at_k(self, k: int, family: Optional[str] = None) -> Optional[float]:
        """Trial estimator: unbiased pass@k averaged over tasks with at least ``k`` attempts."""
        return self._avg(pass_at_k, k, family)

    def pass_hat_k(self, k: int, family: Optional[str] = None) -> Optional[float]:
        """Trial estimator: pass^k averaged over tasks with at least ``k`` attempts."""
        return self._avg(pass_hat_k, k, family)

    def retry_curve(self, ks: range, family: Optional[str] = None,
                    settle_s: Optional[float] = None) -> dict[int, Optional[float]]:
        """Retry estimator for each ``k`` in ``ks``: first success at ``<= k`` over tasks whose
        outcome within ``k`` is known (module docstring); ``None`` where no task is known.
        One pass over the tasks (histograms), then O(1) per ``k``."""
        settle = self._cfg.settle_s if settle_s is None else settle_s
        now = self.last_ts if self.last_ts is not None else -math.inf
        first = [0] * (_MAXBIT + 2)  # tasks by the attempt of their first success
        top = [0] * (_MAXBIT + 2)  # unsettled tasks without a success, by their highest attempt
        succeeded = settled = 0
        for seen, succ, ts in self._held(family):
            s = _low_bit(succ)
            if s:
                first[s] += 1
                succeeded += 1
            elif ts + settle <= now:
                settled += 1
            else:
                top[seen.bit_length()] += 1
        ok_upto = [0] * (_MAXBIT + 2)  # succeeded by attempt k
        open_from = [0] * (_MAXBIT + 3)  # unsettled without a success, highest attempt >= k
        for k in range(1, _MAXBIT + 2):
            ok_upto[k] = ok_upto[k - 1] + first[k]
        for k in range(_MAXBIT + 1, -1, -1):
            open_from[k] = open_from[k + 1] + top[k]
        out: dict[int, Optional[float]] = {}
        for k in ks:
            j = min(max(k, 0), _MAXBIT + 1)
            ok = ok_upto[j]
            known = succeeded + settled + open_from[j]
            out[k] = ok / known if known else None
        return out

    def trial_curve(self, ks: range, family: Optional[str] = None) -> dict[int, Optional[float]]:
        """Unbiased pass@k for each ``k`` in ``ks`` (tasks with ``n >= k``)."""
        nc = self._task_nc(family)
        out: dict[int, Optional[float]] = {}
        for k in ks:
            vals = [pass_at_k(n, c, k) for n, c in nc if n >= k]
            out[k] = sum(vals) / len(vals) if vals else None
        return out

    def reliability_at_k(self, k: int, shape: Optional[str] = None, family: Optional[str] = None,
                         settle_s: Optional[float] = None) -> Optional[float]:
        """Reliability@K of ``shape`` (default: :meth:`shape`)."""
        shape = shape or self.shape()[0]
        if shape == TRIAL:
            return self.pass_at_k(k, family)
        return self.retry_curve(range(k, k + 1), family, settle_s)[k]

    def consistency_at_k(self, k: int, shape: Optional[str] = None, family: Optional[str] = None) -> Optional[float]:
        """pass^k for trials; ``None`` for retries (never observed past the first success)."""
        shape = shape or self.shape()[0]
        return self.pass_hat_k(k, family) if shape == TRIAL else None

    def families(self) -> list[str]:
        return sorted({self.family(t) for t in self.tasks})

    def reliability(self, family: Optional[str] = None, override: Optional[str] = None,
                    settle_s: Optional[float] = None) -> dict[str, Any]:
        """``{"tasks", "shape", "shape_source", "reliability_at_k": {k: v}, "consistency_at_k": {k: v}}``
        for ``k = 1..max_k`` (consistency ``None`` for retries)."""
        ks = range(1, self._cfg.max_k + 1)
        shape, source = self.shape(override)
        rel = self.trial_curve(ks, family) if shape == TRIAL else self.retry_curve(ks, family, settle_s)
        return {
            "tasks": len(self._held(family)),
            "shape": shape,
            "shape_source": source,
            "reliability_at_k": rel,
            "consistency_at_k": {k: self.consistency_at_k(k, shape, family) for k in ks},
        }

    def material_incidents(self, materiality: str = "high") -> int:
        """Incidents at or above ``materiality`` (a :data:`SEVERITIES` value) plus those with no severity."""
        i = SEVERITIES.index(materiality)
        return int(sum(self.c[_INC[s]] for s in SEVERITIES[i:]) + self.c["inc_unset"])

    def mtbce(self, materiality: Optional[str] = None,
              confidence: Optional[float] = None) -> dict[str, Optional[float]]:
        """Clock exposure per material incident, with a Garwood interval (module docstring).

        Keys: ``incidents`` (material), ``incidents_all``, ``exposure_s``, ``tool_calls``,
        ``mtbce_seconds`` (+ ``_lower``/``_upper``), ``tool_calls_per_incident`` (+ ``_lower``/``_upper``).
        ``inf`` with no material incident; ``None`` before any exposure.
        """
        from detectors.rates import poisson_interval

        conf = confidence or self._cfg.interval_confidence
        k = self.material_incidents(materiality or self._cfg.materiality)
        t = (self.last_ts - self.first_ts) if self.first_ts is not None and self.last_ts is not None else 0.0
        calls = self.c["tool_calls"]
        lo, hi = poisson_interval(k, conf)

        def ratio(x: float, d: float) -> Optional[float]:
            if d > 0:
                return x / d
            return math.inf if x > 0 else None

        return {
            "incidents": float(k),
            "incidents_all": float(self.c["incidents"]),
            "exposure_s": t,
            "tool_calls": float(calls),
            "mtbce_seconds": ratio(t, k),
            "mtbce_seconds_lower": ratio(t, hi),
            "mtbce_seconds_upper": ratio(t, lo),
            "tool_calls_per_incident": ratio(calls, k),
            "tool_calls_per_incident_lower": ratio(calls, hi),
            "tool_calls_per_incident_upper": ratio(calls, lo),
        }

    def intervene_to_success(self) -> Optional[float]:
        """Share of successful task outcomes that carried ``intervened=True``."""
        n = self.c["successes"]
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

    def cost_of_confidence(self, confidence: Optional[float] = None, shape: Optional[str] = None,
                           settle_s: Optional[float] = None) -> dict[str, Any]:
        """Spend to be ``confidence`` sure a task has succeeded, from the observed attempts-to-success
        distribution (module docstring). ``reason``: None, ``unreachable`` (``inf``) or ``no_tasks``."""
        cfg = self._cfg
        conf = confidence or cfg.confidence
        c = self.c
        spend = c["spend_usd"] + c["human_minutes"] / 60.0 * cfg.hourly_rate_usd
        att, succ = c["attempts"], c["successes"]
        shape = shape or self.shape()[0]
        top = max((t[0].bit_length() for t in self.tasks.values()), default=0)
        ks = range(1, top + 1)
        curve = self.trial_curve(ks) if shape == TRIAL else self.retry_curve(ks, None, settle_s)
        k = least_k_reaching(curve, conf)
        reason = None
        if not any(v is not None for v in curve.values()):
            reason = "no_tasks"
        elif k is None:
            reason = "unreachable"
        per_attempt = spend / att if att else None
        if k is not None and per_attempt is not None:
            needed: Optional[float] = float(k)
            cost: Optional[float] = k * per_attempt
        elif reason == "unreachable":
            needed = cost = math.inf
        else:
            needed = cost = None
        return {
            "spend_usd": spend,
            "attempts": float(att),
            "successes": float(succ),
            "spend_per_attempt": per_attempt,
            "spend_per_success": spend / succ if succ else None,
            "confidence": conf,
            "shape": shape,
            "curve": curve,
            "attempts_needed": needed,
            "spend_to_confidence": cost,
            "reason": reason,
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
        """``{"v", "tasks": [[task_id, attempt_mask, success_mask, last_ts], ...] (LRU order), "c": {...},
        "first", "last", "declared"}``."""
        return {
            "v": self.STATE_VERSION,
            "tasks": [[k, v[0], v[1], v[2]] for k, v in self.tasks.items()],
            "c": dict(self.c),
            "first": self.first_ts,
            "last": self.last_ts,
            "declared": self.declared,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: Optional[ReliabilityConfig] = None) -> "AgentReliability":
        """Restore; a state written before clock exposure / per-task times (no ``first``, 3-field
        tasks) starts its exposure and every task's settle clock at its ``last``, and counts its
        incidents as without severity (material: fail safe)."""
        cls._check_version(state)
        self = cls(config)
        last = state.get("last")
        self.tasks = OrderedDict(
            (str(row[0]), [int(row[1]), int(row[2]), float(row[3]) if len(row) > 3 and row[3] is not None
                           else (last if last is not None else 0.0)])
            for row in state["tasks"])
        self.c.update({k: v for k, v in state["c"].items() if k in self.c})
        if "inc_unset" not in state["c"]:  # incidents counted before severities were: severity unknown
            self.c["inc_unset"] = self.c["incidents"] - sum(self.c[k] for k in _INC.values())
        self.last_ts = last
        self.first_ts = state.get("first", last)
        d = state.get("declared")
        self.declared = d if d in ATTEMPT_KINDS else None
        return self
