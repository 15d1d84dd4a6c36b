"""Which model an agent runs on, and the drift levels each of its recent models left behind.

An event's ``model`` (schema v1, optional) names the model behind it. :class:`ModelTracker` declares a
**model change** when a model other than the current one is named by ``confirm`` consecutive
model-carrying events (default 3; events without ``model`` neither confirm nor break a run), so an
agent that routes calls between two models does not flap. The change is dated at the first event of
the confirming run, and its ``levels`` are the ones the caller's ``levels()`` gave just before that
event (so the old model's figures hold none of the new model's events). The caller then restarts the agent's drift detectors (a new model is a new
baseline) after parking the old model's levels here (:meth:`park`); if the agent comes back to a model
it ran before, :meth:`levels_of` gives that model's last levels to compare with. At most
``max_models`` models are remembered per agent (least recently used forgotten first); model names are
cut to :data:`MAX_MODEL_LEN` characters.

>>> t = ModelTracker()
>>> [t.update(m, float(i), confirm=2) for i, m in enumerate(["a", "a", "b", None, "a", "b", "b"])]
[None, None, None, None, None, None, ModelSwitch(before='a', after='b', ts=5.0, levels={})]
>>> t.current, t.park("a", {"task_success": 0.9}, 5.0, max_models=2), t.levels_of("a")
('b', None, {'task_success': 0.9})
>>> ModelTracker.from_state(t.to_state()).to_state() == t.to_state()
True
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

from detectors.base import Detector

__all__ = ["MAX_MODEL_LEN", "ModelSwitch", "ModelTracker"]

#: longest model name kept (longer names are cut: they are client-supplied text)
MAX_MODEL_LEN = 128


class ModelSwitch(NamedTuple):
    """A confirmed model change: ``before`` -> ``after``, dated at the first event of the new model's run."""

    before: str
    after: str
    ts: float
    #: the old model's levels just before the new model's first event
    levels: dict[str, float]


class ModelTracker(Detector):
    """The agent's current model, a pending candidate, and the parked levels of its recent models."""

    __slots__ = ("current", "candidate", "run", "run_ts", "run_levels", "parked")

    def __init__(self) -> None:
        self.current: Optional[str] = None
        self.candidate: Optional[str] = None
        self.run = 0
        self.run_ts = 0.0
        self.run_levels: dict[str, float] = {}
        #: model -> {"levels": {signal: level}, "ts": when parked}; oldest (least recently used) first
        self.parked: dict[str, dict[str, Any]] = {}

    def update(self, model: Any, ts: float = 0.0, confirm: int = 3,  # type: ignore[override]
               levels: Optional[Callable[[], Mapping[str, float]]] = None) -> Optional[ModelSwitch]:
        """One event's ``model`` (``None``: not said, ignored). Returns the switch it confirms, if any.

        ``levels``: called when a new model's run starts (before that event is fed to anything else).
        """
        if model is None:
            return None
        model = str(model)[:MAX_MODEL_LEN]
        if model == self.current:
            self.candidate, self.run = None, 0
            return None
        if self.current is None:
            self.current = model
            return None
        if model != self.candidate:
            self.candidate, self.run, self.run_ts = model, 0, ts
            self.run_levels = dict(levels()) if levels is not None else {}
        self.run += 1
        if self.run < max(1, confirm):
            return None
        switch = ModelSwitch(self.current, model, self.run_ts, self.run_levels)
        self.current, self.candidate, self.run, self.run_levels = model, None, 0, {}
        return switch

    def park(self, model: str, levels: Mapping[str, float], ts: float, max_models: int = 4) -> None:
        """Remember ``model``'s drift levels (it just stopped running); keep at most ``max_models``."""
        self.parked.pop(model, None)
        self.parked[model] = {"levels": dict(levels), "ts": ts}
        while len(self.parked) > max(0, max_models):
            del self.parked[next(iter(self.parked))]

    def levels_of(self, model: str) -> Optional[dict[str, float]]:
        """The levels ``model`` had when it last stopped running on this agent (``None``: not remembered)."""
        p = self.parked.get(model)
        return dict(p["levels"]) if p is not None else None

    def to_state(self) -> dict[str, Any]:
        """``{"v", "current", "candidate", "run", "run_ts", "run_levels", "parked": [[model, levels, ts], …]}``."""
        return {"v": self.STATE_VERSION, "current": self.current, "candidate": self.candidate, "run": self.run,
                "run_ts": self.run_ts, "run_levels": self.run_levels, "parked": [[m, p["levels"], p["ts"]] for m, p in self.parked.items()]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: Any = None) -> "ModelTracker":
        cls._check_version(state)
        self = cls()
        self.current = state.get("current")
        self.candidate = state.get("candidate")
        self.run = int(state.get("run") or 0)
        self.run_ts = float(state.get("run_ts") or 0.0)
        self.run_levels = {str(k): float(v) for k, v in dict(state.get("run_levels") or {}).items()}
        for m, levels, ts in state.get("parked") or ():
            self.parked[str(m)] = {"levels": {str(k): float(v) for k, v in dict(levels).items()}, "ts": float(ts)}
        return self
