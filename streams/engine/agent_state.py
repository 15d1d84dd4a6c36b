"""What a worker keeps per agent, and the bytes it is checkpointed as.

An :class:`AgentState` lives on its agent's trace partition: rolling counts of the agent and
of each of its tools, drift and reliability detectors, and the agent's scope strings (the
keys its breakers are published under). Checkpoints are zlib-compressed JSON.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from detectors import AgentDrift, AgentReliability, RollingCounts
from detectors.base import StateError
from detectors.config import CountsConfig
from detectors.models import ModelTracker


def _lag(value: Any) -> float:
    """A checkpoint's ``lag_s``: finite and >= 0, else 0 (the agent reads its windows at the wall clock)."""
    try:
        lag = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return lag if 0.0 <= lag < float("inf") else 0.0


def encode_checkpoint(state: dict[str, Any]) -> bytes:
    """Checkpoint bytes: zlib (level 1) of the JSON state.

    >>> decode_checkpoint(encode_checkpoint({"a": 1}))
    {'a': 1}
    """
    return zlib.compress(orjson.dumps(state), 1)


def decode_checkpoint(value: bytes) -> Any:
    """Inverse of :func:`encode_checkpoint`; plain JSON (older checkpoints) is read as is.

    >>> decode_checkpoint(b'{"a": 1}')
    {'a': 1}
    """
    if value[:1] in (b"{", b"["):
        return orjson.loads(value)
    return orjson.loads(zlib.decompress(value))


@dataclass(slots=True)
class AgentState:
    """Everything a worker keeps for one agent (lives on the agent's partition).

    >>> st = AgentState("bot", 3, RollingCounts(), tools={"shell": RollingCounts()})
    >>> st.scope, st.tool_scopes
    ('agent:bot', {'shell': 'agent:bot/tool:shell'})
    """

    agent_id: str
    partition: int
    counts: RollingCounts
    tools: dict[str, RollingCounts] = field(default_factory=dict)
    drift: AgentDrift = field(default_factory=AgentDrift)
    reliability: AgentReliability = field(default_factory=AgentReliability)
    #: the agent's current model and its recent models' drift levels (:mod:`detectors.models`)
    models: ModelTracker = field(default_factory=ModelTracker)
    last_drift_ts: float = 0.0
    newest_ts: float = 0.0
    #: wall clock minus ``newest_ts`` when that event was counted: the agent's windows are read at
    #: ``wall - lag_s`` (:func:`streams.engine.clock.agent_now`)
    lag_s: float = 0.0
    tenant: str | None = None
    #: a drill agent (its id has the policy's drill prefix): set by the AgentTable from the id, never from
    #: traffic or a checkpoint, so a bare ``drill_id`` cannot take an agent out of cross-agent scopes
    drill: bool = False
    scope: str = ""
    tool_scopes: dict[str, str] = field(default_factory=dict)
    label: str = ""  # the agent's /metrics label: its id, or "other" past the label cap
    #: the checkpoint bytes this state was restored from, while no event changed it (a re-spill reuses them)
    packed: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.scope = "agent:" + self.agent_id
        self.tool_scopes = {t: self.tool_scope(t) for t in self.tools}

    def tool_scope(self, tool: str) -> str:
        """The agent×tool scope string of one of the agent's tools."""
        return f"{self.scope}/tool:{tool}"

    def to_state(self) -> dict[str, Any]:
        return {
            "v": 1,
            "agent": self.agent_id,
            "partition": self.partition,
            "counts": self.counts.to_state(),
            "tools": {t: rc.to_state() for t, rc in self.tools.items()},
            "drift": self.drift.to_state(),
            "reliability": self.reliability.to_state(),
            "models": self.models.to_state(),
            "last_drift_ts": self.last_drift_ts,
            "newest_ts": self.newest_ts,
            "lag_s": self.lag_s,
            "tenant": self.tenant,
        }

    @classmethod
    def from_state(cls, st: dict[str, Any], config: CountsConfig) -> AgentState:
        try:
            drift = AgentDrift.from_state(st["drift"])
        except (StateError, KeyError, ValueError):
            drift = AgentDrift()  # e.g. river upgraded: restart drift baselines, keep counts
        try:  # absent from checkpoints written before model tracking: the next model named starts it
            models = ModelTracker.from_state(st["models"]) if "models" in st else ModelTracker()
        except (StateError, KeyError, TypeError, ValueError):
            models = ModelTracker()
        return cls(
            agent_id=st["agent"],
            partition=int(st["partition"]),
            counts=RollingCounts.from_state(st["counts"], config),
            tools={t: RollingCounts.from_state(s, config) for t, s in st["tools"].items()},
            drift=drift,
            reliability=AgentReliability.from_state(st["reliability"]),
            models=models,
            last_drift_ts=float(st.get("last_drift_ts", 0.0)),
            newest_ts=float(st.get("newest_ts", 0.0)),
            lag_s=_lag(st.get("lag_s")),
            tenant=st.get("tenant"),
        )
