"""tripwire detectors: pure statistics over trace events (no Kafka/faust/HTTP imports).

Stable API for the stream layer (``streams`` -> ``breakers`` -> ``detectors``):

Events
    :class:`EventLike` (Protocol): ``kind, ts`` (epoch **seconds**), ``agent_id, tool,
    tenant, severity, status, latency_ms, cost_usd, input_tokens, output_tokens,
    human_minutes, outcome, task_id, attempt, intervened, should_refuse``.

Per scope (``"agent:a/tool:t"``, ``"agent:a"``, ``"tool:t"``, ``"tenant:x"``, ``"global"``)
    ``rc = RollingCounts(config: CountsConfig | None = None)``

    * ``rc.add_event(ev) -> bool`` hot path (~1 us); ``False`` = too late, counted in ``rc.late``
    * ``rc.window_counts(window_s, now) -> dict[str, float]`` keys :data:`KEYS`
    * ``rc.all_windows(now) -> {window_s: counts}`` (configured windows + budget period)
    * ``rc.watermark``, ``rc.late``, ``rc.to_state()``, ``RollingCounts.from_state(state, config)``

    Cross-agent scopes are summed at read time over the per-agent counts (``streams.engine``).

Names (one owner each)
    :mod:`detectors.keys`: the counter names (:data:`KEYS`, ``TOOL_CALLS``, ...) and
    ``event_vector``; :mod:`detectors.durations`: ``parse_duration``, ``format_duration``
    and ``window_label(300) == "5m"`` (durations of policies, windows and metric labels).

Rates
    ``rate_estimate(k, n, objective=None, confidence=0.95) -> RateEstimate(successes,
    trials, rate, lower, upper, p_exceeds)``; ``wilson_interval``; ``wilson_lower`` (one-sided,
    budgets' minimum evidence); ``z_value``; ``poisson_interval``.

Per agent
    ``AgentDrift(config: DriftConfig | None).update(ev) -> list[DriftReport]``
    (``DriftReport(detector, signal, before, after, ts, statistic, detail)``),
    ``AgentReliability(config: ReliabilityConfig | None).update(ev)`` with reads
    ``shape()`` (retry | trial), ``reliability_at_k(k)``, ``consistency_at_k(k)``,
    ``pass_at_k(k)``, ``pass_hat_k(k)``, ``retry_curve(ks)``, ``reliability()``, ``mtbce()``,
    ``intervene_to_success()``, ``safe_refusal()``, ``cost_of_confidence()``, ``metrics()``.

State
    Every detector: ``to_state() -> dict`` (plain JSON: lists/numbers/strings/None,
    orjson-friendly, with a ``"v"`` version) and ``Cls.from_state(state, config=None)``;
    ``to_state(from_state(s)) == s``. Layout mismatches raise :class:`StateError`.

>>> from detectors import RollingCounts, KEYS
>>> sorted(RollingCounts().window_counts(300, 0.0)) == sorted(KEYS)
True
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that owns it; loaded on first use, so ``import detectors`` (and
#: breakers, which reads ``detectors.keys``, ``durations`` and ``rates``) stays cheap: river
#: loads only when a drift detector is used
_OWNERS = {
    "Adwin": "detectors.adwin",
    "AgentDrift": "detectors.drift",
    "AgentReliability": "detectors.reliability",
    "CountsConfig": "detectors.config",
    "Detector": "detectors.base",
    "DriftConfig": "detectors.config",
    "DriftReport": "detectors.types",
    "EventLike": "detectors.types",
    "KEYS": "detectors.keys",
    "RateEstimate": "detectors.rates",
    "ReliabilityConfig": "detectors.config",
    "RollingCounts": "detectors.counts",
    "SensitivityResult": "detectors.sensitivity",
    "StateError": "detectors.base",
    "ToolMix": "detectors.toolmix",
    "beta_exceedance": "detectors.rates",
    "detection_delay": "detectors.sensitivity",
    "event_vector": "detectors.keys",
    "format_duration": "detectors.durations",
    "parse_duration": "detectors.durations",
    "poisson_interval": "detectors.rates",
    "rate_estimate": "detectors.rates",
    "wilson_interval": "detectors.rates",
    "wilson_lower": "detectors.rates",
    "window_label": "detectors.durations",
    "z_value": "detectors.rates",
}

__all__ = sorted(_OWNERS) + ["ScopeCounts"]


def __getattr__(name: str) -> Any:
    if name == "ScopeCounts":  # alias: the issue calls per-scope counts "ScopeCounts"
        name = "RollingCounts"
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'detectors' has no attribute {name!r}")
    value = getattr(importlib.import_module(owner), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
