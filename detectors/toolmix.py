"""Tool-mix drift: G-test + Jensen-Shannon divergence between reference and current windows.

Tool calls are counted into a current window of ``tool_mix_window`` calls.
When it fills, it is compared with the reference counts: drift if the
G-test (2 x k contingency, chi-square with Wilson-Hilferty critical value at
``tool_mix_alpha``) rejects equality **and** the Jensen-Shannon divergence
(bits, in [0, 1]) is at least ``tool_mix_min_jsd``. On drift the reference is
replaced by the current window; otherwise the current window is folded into
the reference (old reference counts decayed by ``tool_mix_ref_decay``).
At most ``max_tools`` distinct tools are tracked; others count as ``"~other"``.

>>> from detectors.config import DriftConfig
>>> tm = ToolMix(DriftConfig(tool_mix_window=100))
>>> reps = [tm.update("search" if i % 2 else "book", float(i)) for i in range(300)]
>>> [r for r in reps if r]
[]
>>> reps = [tm.update("refund", 300.0 + i) for i in range(100)]
>>> r = [r for r in reps if r][0]
>>> r.signal, r.detail, r.before, r.after, r.statistic
('tool_mix', 'refund', 0.0, 1.0, 1.0)
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from detectors.base import Detector
from detectors.config import DriftConfig
from detectors.rates import z_value
from detectors.types import DriftReport

__all__ = ["ToolMix", "jensen_shannon", "g_test", "chi2_critical"]

OTHER = "~other"
_CRIT: dict[tuple[int, float], float] = {}


def chi2_critical(dof: int, alpha: float) -> float:
    """Upper ``alpha`` quantile of chi-square(``dof``), Wilson-Hilferty approximation (pure Python).

    >>> round(chi2_critical(1, 0.05), 2), round(chi2_critical(10, 0.05), 2)
    (3.84, 18.29)
    """
    key = (dof, alpha)
    v = _CRIT.get(key)
    if v is None:
        z = z_value(1.0 - alpha, sides=1)
        if dof == 1:  # exact: chi2_1 = Z^2
            v = z_value(1.0 - alpha) ** 2
        elif dof == 2:  # exact: sf(x) = exp(-x / 2)
            v = -2.0 * math.log(alpha)
        else:
            c = 2.0 / (9.0 * dof)
            v = dof * (1.0 - c + z * math.sqrt(c)) ** 3
        _CRIT[key] = v
    return v


def jensen_shannon(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """JS divergence in bits between two count (or probability) dicts.

    >>> jensen_shannon({"a": 1}, {"b": 5}), jensen_shannon({"a": 2, "b": 2}, {"a": 1, "b": 1})
    (1.0, 0.0)
    """
    sp, sq = sum(p.values()), sum(q.values())
    if sp <= 0 or sq <= 0:
        return 0.0
    js = 0.0
    for t in set(p) | set(q):
        a, b = p.get(t, 0.0) / sp, q.get(t, 0.0) / sq
        m = 0.5 * (a + b)
        if a > 0:
            js += 0.5 * a * math.log2(a / m)
        if b > 0:
            js += 0.5 * b * math.log2(b / m)
    return max(0.0, min(1.0, js))


def g_test(p: Mapping[str, float], q: Mapping[str, float]) -> tuple[float, int]:
    """G statistic and degrees of freedom of the 2 x k table of two count dicts."""
    sp, sq = sum(p.values()), sum(q.values())
    tot = sp + sq
    if sp <= 0 or sq <= 0:
        return 0.0, 0
    g = 0.0
    cats = 0
    for t in set(p) | set(q):
        a, b = p.get(t, 0.0), q.get(t, 0.0)
        r = a + b
        if r <= 0:
            continue
        cats += 1
        if a > 0:
            g += a * math.log(a / (r * sp / tot))
        if b > 0:
            g += b * math.log(b / (r * sq / tot))
    return 2.0 * g, max(cats - 1, 0)


class ToolMix(Detector):
    """Per-agent tool-frequency drift (see module docstring)."""

    __slots__ = ("_cfg", "ref", "cur", "n")

    def __init__(self, config: Optional[DriftConfig] = None) -> None:
        self._cfg = config or DriftConfig()
        self.ref: dict[str, float] = {}
        self.cur: dict[str, int] = {}
        self.n = 0

    def update(self, tool: Optional[str], ts: float = 0.0) -> Optional[DriftReport]:  # type: ignore[override]
        """Count one tool call; returns a report when a full window shows drift."""
        cur = self.cur
        t = tool if tool is not None else OTHER
        c = cur.get(t)
        if c is None:
            if len(cur) >= self._cfg.max_tools:
                t = OTHER
                c = cur.get(t, 0)
            else:
                c = 0
        cur[t] = c + 1
        self.n += 1
        if self.n >= self._cfg.tool_mix_window:
            return self._close(ts)
        return None

    def _close(self, ts: float) -> Optional[DriftReport]:
        cfg = self._cfg
        cur, ref = self.cur, self.ref
        rep = None
        if not ref:
            self.ref = {k: float(v) for k, v in cur.items()}
        else:
            g, dof = g_test(ref, cur)
            js = jensen_shannon(ref, cur)
            if dof > 0 and g > chi2_critical(dof, cfg.tool_mix_alpha) and js >= cfg.tool_mix_min_jsd:
                sr, sc = sum(ref.values()), sum(cur.values())
                tool = max(set(ref) | set(cur), key=lambda k: (abs(cur.get(k, 0) / sc - ref.get(k, 0.0) / sr), k))
                rep = DriftReport("jsd", "tool_mix", ref.get(tool, 0.0) / sr, cur.get(tool, 0) / sc, ts, js, tool)
                self.ref = {k: float(v) for k, v in cur.items()}
            else:
                d = cfg.tool_mix_ref_decay
                new = {k: v * d for k, v in ref.items()}
                for k, v in cur.items():
                    new[k] = new.get(k, 0.0) + v
                if len(new) > cfg.max_tools:
                    keep = sorted(new.items(), key=lambda kv: -kv[1])[: cfg.max_tools]
                    new = dict(keep)
                self.ref = {k: v for k, v in new.items() if v >= 1e-3}
        self.cur = {}
        self.n = 0
        return rep

    def to_state(self) -> dict[str, Any]:
        """``{"v", "ref": [[tool, count], ...], "cur": [[tool, count], ...], "n"}`` (sorted)."""
        return {
            "v": self.STATE_VERSION,
            "ref": [[k, v] for k, v in sorted(self.ref.items())],
            "cur": [[k, v] for k, v in sorted(self.cur.items())],
            "n": self.n,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: Optional[DriftConfig] = None) -> "ToolMix":
        cls._check_version(state)
        self = cls(config)
        self.ref = {str(k): float(v) for k, v in state["ref"]}
        self.cur = {str(k): int(v) for k, v in state["cur"]}
        self.n = int(state["n"])
        return self
