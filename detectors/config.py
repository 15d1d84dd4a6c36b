"""Configuration dataclasses (plain keyword arguments, no settings framework).

>>> cfg = CountsConfig(lateness_s=120)
>>> cfg.window_level(3600)   # 1h is read from level 1 (5-minute buckets), 12 buckets
(1, 12)
>>> CountsConfig().bucket_count
83
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

__all__ = [
    "CountsConfig",
    "DEFAULT_COUNTS_CONFIG",
    "DriftConfig",
    "ReliabilityConfig",
    "DEFAULT_SEVERITY_WEIGHTS",
    "DEFAULT_LEVELS",
    "DEFAULT_WINDOWS",
    "DAY",
]

MINUTE = 60
HOUR = 3600
DAY = 86400

DEFAULT_SEVERITY_WEIGHTS: Mapping[str, float] = {"low": 1.0, "medium": 2.0, "high": 5.0, "critical": 10.0}

#: (bucket width in seconds, number of buckets) per level, finest first.
DEFAULT_LEVELS: tuple[tuple[int, int], ...] = (
    (60, 5),  # 5m
    (300, 12),  # 30m, 1h
    (1800, 12),  # 6h
    (10800, 24),  # 1d, 3d
    (DAY, 30),  # 30-day budget period
)
DEFAULT_WINDOWS: tuple[int, ...] = (300, 1800, HOUR, 6 * HOUR, DAY, 3 * DAY)


@dataclass(frozen=True, eq=False)
class CountsConfig:
    """Bucket layout and classification of :class:`~detectors.counts.RollingCounts`.

    ``levels`` are rings of equal-width buckets (finest first; every width a
    multiple of the finest). A window ``W`` is served by the finest level
    whose width divides ``W`` and whose ring holds ``W / width`` buckets.
    ``period_s`` (the budget period) must be servable too.
    ``float_typecode`` is the :mod:`array` typecode of the two float fields
    (``near_misses_weighted``, ``cost_usd``): ``"f"`` (float32, ~7 significant
    digits, keeps a scope under 4 KiB) or ``"d"`` (float64).
    """

    levels: tuple[tuple[int, int], ...] = DEFAULT_LEVELS
    windows: tuple[int, ...] = DEFAULT_WINDOWS
    period_s: int = 30 * DAY
    lateness_s: float = 300.0
    severity_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SEVERITY_WEIGHTS))
    default_weight: float = 1.0
    float_typecode: str = "f"

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("at least one level")
        g0 = self.levels[0][0]
        for g, n in self.levels:
            if g <= 0 or n <= 0 or g % g0:
                raise ValueError(f"bad level {(g, n)}: widths must be positive multiples of {g0}")
        if self.float_typecode not in ("f", "d"):
            raise ValueError("float_typecode must be 'f' or 'd'")
        if self.lateness_s < 0:
            raise ValueError("lateness_s must be >= 0")
        wmap = {}
        for w in tuple(self.windows) + (self.period_s,):
            wmap[int(w)] = self._find_level(int(w))
        object.__setattr__(self, "_wmap", wmap)
        object.__setattr__(self, "severity_weights", dict(self.severity_weights))

    def _find_level(self, w: int) -> tuple[int, int]:
        for j, (g, n) in enumerate(self.levels):
            if w % g == 0 and w // g <= n:
                return (j, w // g)
        raise ValueError(f"window {w}s cannot be served by levels {self.levels}")

    def window_level(self, window_s: float) -> tuple[int, int]:
        """``(level index, number of buckets)`` serving ``window_s``."""
        w = int(window_s)
        hit = self._wmap.get(w)  # type: ignore[attr-defined]
        if hit is None:
            hit = self._find_level(w)
        return hit

    @property
    def bucket_count(self) -> int:
        """Total buckets over all levels (memory is ~44 bytes per bucket)."""
        return sum(n for _, n in self.levels)


#: the layout every scope uses unless configured otherwise
DEFAULT_COUNTS_CONFIG = CountsConfig()


@dataclass(frozen=True, eq=False)
class DriftConfig:
    """Settings of :class:`~detectors.drift.AgentDrift`.

    ADWIN parameters follow :class:`river.drift.ADWIN`. ``cooldown`` is the
    number of updates of a signal after a report during which further ADWIN
    cuts of that signal are absorbed silently (ADWIN usually cuts a few
    times while it trims the old sub-window).
    """

    delta: float = 0.002
    clock: int = 32
    max_buckets: int = 5
    min_window_length: int = 5
    grace_period: int = 30
    cooldown: int = 500
    log_transform: bool = True
    tool_mix_window: int = 500
    tool_mix_alpha: float = 1e-4
    tool_mix_min_jsd: float = 0.05
    tool_mix_ref_decay: float = 0.75
    max_tools: int = 64
    #: task success (:mod:`detectors.success`): outcomes in the reference and recent windows, |z| to report
    success_reference: int = 100
    success_recent: int = 50
    success_z: float = 4.0


@dataclass(frozen=True, eq=False)
class ReliabilityConfig:
    """Settings of :class:`~detectors.reliability.AgentReliability`.

    ``confidence``, ``materiality`` and ``settle_s`` are defaults of read-time
    arguments (the worker passes the policy's ``reliability`` section instead).
    """

    max_k: int = 4
    max_tasks: int = 4096
    hourly_rate_usd: float = 120.0
    #: cost of confidence: spend to be this sure a task has succeeded
    confidence: float = 0.95
    interval_confidence: float = 0.95
    #: MTBCE counts incidents at or above this severity (and those with none)
    materiality: str = "high"
    #: a retried task without a success and no new attempt for this long (agent event time) was given up
    settle_s: float = 900.0
    #: ``True``: spend comes only from ``task_outcome`` totals; ``False``
    #: (default): from every other event, ``task_outcome`` values ignored.
    task_totals: bool = False
    family_sep: str = ":"
