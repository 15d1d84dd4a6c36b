"""tripwire detectors: pure statistics over trace events (no Kafka/faust/HTTP imports).

Stable API for the stream layer (``streams`` -> ``breakers`` -> ``detectors``):

Events
    :class:`EventLike` (Protocol): ``kind, ts`` (epoch **seconds**), ``agent_id, tool,
    tenant, severity, status, latency_ms, cost_usd, input_tokens, output_tokens,
    human_minutes, outcome, task_id, attempt, intervened, should_refuse``.

Per scope (``"agent:a/tool:t"``, ``"agent:a"``, ``"tool:t"``, ``"tenant:x"``, ``"global"``)
    ``rc = RollingCounts(config: CountsConfig | None = None, *, track_delta=False)``

    * ``rc.add_event(ev) -> bool`` hot path (~1 us); ``False`` = too late, counted in ``rc.late``
    * ``rc.window_counts(window_s, now) -> dict[str, float]`` keys :data:`KEYS`
    * ``rc.all_windows(now) -> {window_s: counts}`` (configured windows + budget period)
    * ``rc.drain_delta() -> CountsDelta`` (needs ``track_delta=True``), ``rc.merge(delta | other_rc)``
    * ``rc.watermark``, ``rc.late``, ``rc.to_state()``, ``RollingCounts.from_state(state, config)``

    Cross-agent scopes: keep partition-local counts with ``track_delta=True`` (e.g.
    the (agent, tool) scopes), every flush ``d = rc.drain_delta()``, sum deltas per
    target scope with ``CountsDelta.merge``, ship ``d.to_state()``; the owner of
    ``tool:X`` / ``tenant:T`` / ``global`` applies ``rc.merge(CountsDelta.from_state(s))``.

Budgets (pure functions for the breaker layer)
    ``evaluate_budget(spec: BudgetSpec, windows: {window_s: counts}, period_counts) -> BudgetStatus``
    (``.alerts: list[BurnAlert]``, ``.burn_rates``, ``.budget_remaining``, ``.severity``);
    ``evaluate_counts(spec, rc, now)`` reads the windows itself. ``window_label(300) == "5m"``.

Rates
    ``rate_estimate(k, n, objective=None, confidence=0.95) -> RateEstimate(successes,
    trials, rate, lower, upper, p_exceeds)``; ``EvidenceRule(min_trials, min_successes,
    confidence).exceeded(k, n, objective)``; ``wilson_interval``; ``poisson_interval``.

Per agent
    ``AgentDrift(config: DriftConfig | None).update(ev) -> list[DriftReport]``
    (``DriftReport(detector, signal, before, after, ts, statistic, detail)``),
    ``AgentReliability(config: ReliabilityConfig | None).update(ev)`` with reads
    ``pass_at_k(k)``, ``pass_hat_k(k)``, ``reliability()``, ``mtbce()``,
    ``intervene_to_success()``, ``safe_refusal()``, ``cost_of_confidence()``, ``metrics()``.

State
    Every detector: ``to_state() -> dict`` (plain JSON: lists/numbers/strings/None,
    orjson-friendly, with a ``"v"`` version) and ``Cls.from_state(state, config=None)``;
    ``to_state(from_state(s)) == s``. Layout mismatches raise :class:`StateError`.

>>> from detectors import RollingCounts, KEYS
>>> sorted(RollingCounts().window_counts(300, 0.0)) == sorted(KEYS)
True
"""

from detectors.adwin import Adwin
from detectors.base import Detector, StateError
from detectors.budgets import (
    DEFAULT_BURN_RULES,
    BudgetSpec,
    BudgetStatus,
    BurnAlert,
    BurnRule,
    budget_remaining,
    burn_rate,
    evaluate_budget,
    evaluate_counts,
    window_label,
)
from detectors.config import CountsConfig, DriftConfig, ReliabilityConfig
from detectors.counts import KEYS, RollingCounts, event_vector
from detectors.delta import CountsDelta
from detectors.drift import AgentDrift
from detectors.rates import (
    EvidenceRule,
    RateEstimate,
    beta_exceedance,
    poisson_interval,
    rate_estimate,
    wilson_interval,
)
from detectors.reliability import AgentReliability
from detectors.sensitivity import SensitivityResult, detection_delay
from detectors.toolmix import ToolMix
from detectors.types import DriftReport, EventLike

#: Alias: the issue calls per-scope counts "ScopeCounts".
ScopeCounts = RollingCounts

__all__ = [
    "Adwin",
    "AgentDrift",
    "AgentReliability",
    "BudgetSpec",
    "BudgetStatus",
    "BurnAlert",
    "BurnRule",
    "CountsConfig",
    "CountsDelta",
    "DEFAULT_BURN_RULES",
    "Detector",
    "DriftConfig",
    "DriftReport",
    "EventLike",
    "EvidenceRule",
    "KEYS",
    "RateEstimate",
    "ReliabilityConfig",
    "RollingCounts",
    "ScopeCounts",
    "SensitivityResult",
    "StateError",
    "ToolMix",
    "beta_exceedance",
    "budget_remaining",
    "burn_rate",
    "detection_delay",
    "evaluate_budget",
    "evaluate_counts",
    "event_vector",
    "poisson_interval",
    "rate_estimate",
    "wilson_interval",
    "window_label",
]
