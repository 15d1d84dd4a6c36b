"""Drill results: each step's outcome against its SLO, and the whole drill's record.

>>> r = DrillResult("d1", "agent:drill-x/tool:shell", "drill-x", "near-miss-spike", "escalated", 0.0,
...                 steps=[StepResult("detection", PASS, 1.2, 10.0), StepResult("reset", FAIL)])
>>> r.result, r.failed_steps()
('fail', ['reset'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"
STEPS = ("detection", "breaker_open", "authz_deny", "alert_fired", "reset", "closed", "authz_allow",
         "stays_closed", "alert_resolved")


@dataclass
class StepResult:
    """One drill step's outcome."""

    name: str
    status: str = FAIL
    seconds: float | None = None
    slo_s: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status,
                "seconds": None if self.seconds is None else round(self.seconds, 3),
                "slo_s": self.slo_s, "detail": self.detail}


@dataclass
class DrillResult:
    """Everything a drill report shows."""

    drill_id: str
    scope: str
    agent: str
    profile: str
    expect_state: str
    started_at: float
    finished_at: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)
    slo: dict[str, float] = field(default_factory=dict)
    chaos: dict[str, Any] = field(default_factory=dict)
    events_sent: int = 0
    reported: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(s.status != FAIL for s in self.steps)

    @property
    def result(self) -> str:
        return "pass" if self.passed else "fail"

    def failed_steps(self) -> list[str]:
        return [s.name for s in self.steps if s.status == FAIL]

    def step(self, name: str) -> StepResult:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "drill_result", "drill_id": self.drill_id, "scope": self.scope, "agent": self.agent,
                "profile": self.profile, "expect_state": self.expect_state, "result": self.result,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "failed_steps": self.failed_steps(), "steps": [s.to_dict() for s in self.steps],
                "targets": self.targets, "slo": self.slo, "chaos": self.chaos, "events_sent": self.events_sent,
                "reported": self.reported}
