"""Per-agent online drift: ADWIN on rates and magnitudes, plus tool-mix drift.

Signals (the ``signal`` of each :class:`~detectors.types.DriftReport`):

=================== ===================================================== ==============================
signal              stream fed to ADWIN                                   ``before`` / ``after`` units
=================== ===================================================== ==============================
``near_miss_rate``  0 per ``tool_call``, 1 per ``monitor_flag``           near-misses per tool call
``refusal_rate``    0 per ``tool_call``, 1 per ``refusal``                refusals / (tool calls + refusals)
``tool_latency_ms`` ``log(latency_ms + 1)`` of ``tool_call``              ms (geometric mean)
``llm_latency_ms``  ``log(latency_ms + 1)`` of ``llm_call``               ms (geometric mean)
``cost_usd``        ``log(cost_usd + 1e-4)`` of ``tool_call``/``llm_call`` USD (geometric mean)
``tokens``          ``log(input + output tokens + 1)`` of ``llm_call``    tokens (geometric mean)
``tool_mix``        see :mod:`detectors.toolmix` (detector ``"jsd"``)      share of the most-moved tool
``task_success``    see :mod:`detectors.success` (``"two_proportion_z"``) success rate of the reference /
                    1 per ``task_outcome`` success, 0 per failure         recent window (0..1)
=================== ===================================================== ==============================

Near-miss indicator choice: flags are not linked back to calls here (no
``tool_call_id`` in the event protocol), so the ADWIN stream is the merged
sequence of tool calls (0) and flags (1). Its mean ``m`` is
``flags / (calls + flags)``; reports convert it to flags per call
``m / (1 - m)``. Magnitudes are log-transformed (``DriftConfig.log_transform``)
because ADWIN's bound assumes light tails; reports convert back, so
``before``/``after`` are geometric means. ADWIN detects changes both ways;
filter on ``after > before`` if only rises matter. After a report a signal
stays quiet for ``DriftConfig.cooldown`` updates (ADWIN cuts several times
while trimming the old sub-window).

>>> import random
>>> from detectors.testing import Ev
>>> rng = random.Random(3)
>>> d = AgentDrift()
>>> reports = []
>>> for i in range(6000):
...     p = 0.05 if i < 3000 else 0.25
...     kind = "monitor_flag" if rng.random() < p else "tool_call"
...     reports += d.update(Ev(kind, 1e9 + i, tool="t"))
>>> r = reports[0]
>>> r.signal, r.before < 0.06 < r.after, r.ts > 1e9 + 3000
('near_miss_rate', True, True)
>>> round(d.level("near_miss_rate"), 2)   # flags per call after the shift (0.25 / 0.75)
0.3
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from detectors.adwin import Adwin
from detectors.base import Detector, StateError
from detectors.config import DriftConfig
from detectors.success import SIGNAL as TASK_SUCCESS
from detectors.success import SuccessDrift
from detectors.toolmix import ToolMix
from detectors.types import DriftReport

__all__ = ["AgentDrift", "LEVEL_SIGNALS", "SIGNALS", "TASK_SUCCESS"]

#: signal -> log offset (``None`` = 0/1 indicator stream)
SIGNALS: dict[str, Optional[float]] = {
    "near_miss_rate": None,
    "refusal_rate": None,
    "tool_latency_ms": 1.0,
    "llm_latency_ms": 1.0,
    "cost_usd": 1e-4,
    "tokens": 1.0,
}

#: every signal with a level (:meth:`AgentDrift.level`), in report order: what a model change compares
LEVEL_SIGNALS: tuple[str, ...] = (*SIGNALS, TASK_SUCCESS)

_log = math.log


class AgentDrift(Detector):
    """All drift detectors of one agent. ``update(ev) -> list[DriftReport]``."""

    __slots__ = ("_cfg", "_sig", "mix", "success")

    def __init__(self, config: Optional[DriftConfig] = None) -> None:
        self._cfg = c = config or DriftConfig()
        self._sig: dict[str, Adwin] = {}
        self.mix = ToolMix(c)
        #: created at the agent's first task outcome (most agents send none: no windows held for them)
        self.success: Optional[SuccessDrift] = None

    def _new(self, name: str) -> Adwin:
        c = self._cfg
        s = self._sig[name] = Adwin(c.delta, c.clock, c.max_buckets, c.min_window_length, c.grace_period,
                                    cooldown=c.cooldown)
        return s

    def _feed(self, name: str, x: float, ts: float, out: list[DriftReport]) -> None:
        s = self._sig.get(name) or self._new(name)
        r = s.update(x)
        if r is not None:
            out.append(self._report(name, r[0], r[1], ts))

    def _report(self, name: str, before: float, after: float, ts: float) -> DriftReport:
        off = SIGNALS[name]
        if off is None:
            if name == "near_miss_rate":
                before = before / (1.0 - before) if before < 1.0 else math.inf
                after = after / (1.0 - after) if after < 1.0 else math.inf
        elif self._cfg.log_transform:
            before = math.exp(before) - off
            after = math.exp(after) - off
        return DriftReport("adwin", name, before, after, ts, abs(after - before))

    def update(self, ev: Any) -> list[DriftReport]:
        """Feed one event; returns the drift reports it triggered (usually none)."""
        out: list[DriftReport] = []
        kind = ev.kind
        ts = ev.ts
        lg = self._cfg.log_transform
        if kind == "tool_call":
            sig = self._sig
            r = (sig.get("near_miss_rate") or self._new("near_miss_rate")).update(0.0)
            if r is not None:
                out.append(self._report("near_miss_rate", r[0], r[1], ts))
            r = (sig.get("refusal_rate") or self._new("refusal_rate")).update(0.0)
            if r is not None:
                out.append(self._report("refusal_rate", r[0], r[1], ts))
            x = ev.latency_ms
            if x is not None:
                self._feed("tool_latency_ms", _log(x + 1.0) if lg else x, ts, out)
            x = ev.cost_usd
            if x is not None:
                self._feed("cost_usd", _log(x + 1e-4) if lg else x, ts, out)
            r = self.mix.update(ev.tool, ts)
            if r is not None:
                out.append(r)
        elif kind == "llm_call":
            x = ev.latency_ms
            if x is not None:
                self._feed("llm_latency_ms", _log(x + 1.0) if lg else x, ts, out)
            x = ev.cost_usd
            if x is not None:
                self._feed("cost_usd", _log(x + 1e-4) if lg else x, ts, out)
            a, b = ev.input_tokens, ev.output_tokens
            if a is not None or b is not None:
                x = (a or 0) + (b or 0)
                self._feed("tokens", _log(x + 1.0) if lg else x, ts, out)
        elif kind == "monitor_flag":
            self._feed("near_miss_rate", 1.0, ts, out)
        elif kind == "refusal":
            self._feed("refusal_rate", 1.0, ts, out)
        elif kind == "task_outcome":
            sd = self.success
            if sd is None:
                c = self._cfg
                sd = self.success = SuccessDrift(c.success_reference, c.success_recent, c.success_z)
            r = sd.update(ev.outcome == "success", ts)
            if r is not None:
                out.append(r)
        return out

    @property
    def config(self) -> DriftConfig:
        """The settings this detector runs with."""
        return self._cfg

    def level(self, signal: str) -> Optional[float]:
        """Current level of a signal (same units as reports), ``None`` if never fed."""
        if signal == "tool_mix":
            return None
        if signal == TASK_SUCCESS:
            return self.success.level() if self.success is not None else None
        s = self._sig.get(signal)
        if s is None or s.width == 0:
            return None
        m = s.estimation
        return self._report(signal, m, m, 0.0).after

    def levels(self) -> dict[str, float]:
        """Every signal's current level that has one (see :meth:`level`), in :data:`LEVEL_SIGNALS` order."""
        out: dict[str, float] = {}
        for name in LEVEL_SIGNALS:
            x = self.level(name)
            if x is not None and math.isfinite(x):
                out[name] = x
        return out

    def to_state(self) -> dict[str, Any]:
        """``{"v", "sig": {signal: {"ad": Adwin state, "cool": int}}, "mix": ToolMix state, "success": …}``.

        ``success`` (:class:`~detectors.success.SuccessDrift`, ``None`` before the first task outcome) is
        absent from older checkpoints (it then starts empty) and ignored by older code (no version bump:
        both directions restore).
        """
        return {
            "v": self.STATE_VERSION,
            "sig": {k: {"ad": s.to_state(), "cool": s.cool} for k, s in sorted(self._sig.items())},
            "mix": self.mix.to_state(),
            "success": self.success.to_state() if self.success is not None else None,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: Optional[DriftConfig] = None) -> "AgentDrift":
        """Rebuild; an ADWIN saved by another river version restarts empty (drift relearns)."""
        cls._check_version(state)
        self = cls(config)
        for k, v in state["sig"].items():
            if k not in SIGNALS:
                continue
            try:
                sg = Adwin.from_state(v["ad"])
                sg.cooldown = self._cfg.cooldown
                sg.cool = int(v["cool"])
                self._sig[k] = sg
            except StateError:
                self._new(k)
        self.mix = ToolMix.from_state(state["mix"], self._cfg)
        if state.get("success") is not None:
            try:
                self.success = SuccessDrift.from_state(state["success"], self._cfg)
            except StateError:
                pass  # an unknown format: the task-success windows relearn
        return self
