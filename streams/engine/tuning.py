"""The engine's tuning knobs, one model: how often scopes are evaluated and what memory is bounded.

Defaults are what the worker runs with; ``Settings.engine`` (``TRIPWIRE_ENGINE__HOT_EVAL_S``, …)
overrides them.

>>> EngineTuning().hot_eval_s, EngineTuning(eval_budget_s=0.5).eval_budget_s
(1.0, 0.5)
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class EngineTuning(BaseModel):
    """Pacing of evaluations and bounds of the engine's in-memory state."""

    relaxed_eval_s: float = Field(
        5.0, ge=0,
        description="scopes that saw only good events (which cannot raise a rate) are evaluated at most this "
        "often; they are not skipped, since good calls can complete a minimum-evidence rule")
    hot_eval_s: float = Field(
        1.0, ge=0,
        description="a scope is evaluated on the first tick after a bad event (flag, incident, error, drift), "
        "then at most once per this many seconds while bad events keep coming")
    eval_budget_s: float = Field(
        0.1, ge=0,
        description="CPU time one evaluation tick may spend; past it the remaining scopes wait for the next tick "
        "(least recently evaluated first), so ingest keeps up when thousands of scopes change at once")
    evaluate_unchanged: bool = Field(
        False,
        description="evaluate every breaker that is not closed on every tick, also when none of its windows, "
        "drift signal or timers can have changed since its last evaluation (the earlier rule: the same "
        "decisions for many more evaluations; the default evaluates such a breaker when its next window "
        "bucket leaves or its next timer runs out, and at once on its events, probes and operator actions)")
    sort_above: int = Field(
        500, ge=0,
        description="with more candidate scopes than this in one tick, they are evaluated least recently "
        "evaluated first (no starvation under overload)")
    agent_idle_evict_s: float = Field(
        3 * 86400.0, gt=0,
        description="an agent silent this long (event time) is forgotten and its checkpoint deleted; its breaker "
        "states are kept")
    agent_spill_idle_s: float = Field(
        900.0, gt=0,
        description="an agent silent this long (event time) is spilled: its state leaves memory and is kept only "
        "as its compact checkpoint (~0.6 KB zlib'd), restored on its next event or when one of its scopes is "
        "evaluated; its counts stay in cross-agent sums. Agents with a breaker not closed are never spilled")
    max_live_agents: int = Field(
        10_000, ge=1,
        description="agents held live (~15 KB each); past it the least recently seen are spilled (never lost), "
        "so memory stays bounded however many agent ids arrive. Agents with a breaker not closed stay live "
        "(the cap may be exceeded by them)")
    drift_active_s: float = Field(
        6 * 3600.0, ge=0,
        description="a drift report keeps the agent's drift signal active this long (what `drift` budgets read)")
    drift_reports_max: int = Field(
        1000, ge=1,
        description="drift reports waiting to be published; under a drift storm the oldest are dropped")
    drift_model_confirm: int = Field(
        3, ge=1,
        description="a model change (an event's `model` other than the agent's current one) is declared after "
        "this many consecutive model-carrying events name the new model, so an agent routing between models "
        "does not flap; the change restarts the agent's drift detectors and is published on breaker-events")
    drift_models_max: int = Field(
        4, ge=0,
        description="models per agent whose drift levels are remembered (to compare with when the agent "
        "returns to one); the least recently used is forgotten first")
    scope_cache_max: int = Field(
        100_000, ge=1,
        description="entries of each scope cache (typed scopes parsed from strings, scopes guarding an event, "
        "cross-agent scopes per tool and tenant) before it is cleared")
    errors_logged_max: int = Field(
        10_000, ge=0,
        description="scopes whose first failure is remembered so that each is logged once")
    state_future_skew_s: float = Field(
        120.0, gt=0,
        description="a breaker-state record dated more than this ahead of this worker's wall clock is ignored "
        "(counted): newest-wins would otherwise let one forged future record override every later decision")
