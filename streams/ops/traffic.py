"""Synthetic agent traffic that looks like production, for ``tripwire up`` and drills.

A dozen agents with several tools each, a realistic base near-miss rate, rare
incidents, refusals, escalations, LLM calls, and task outcomes with retries. From
time to time one agent "goes bad" for a few minutes (near-misses of high severity,
critical incidents, slower tools), so the demo shows detectors and breakers act.

>>> gen = SyntheticTraffic(seed=1)
>>> batches = gen.tick(now=1_800_000_000.0, dt=1.0)
>>> "tool_call" in {e["kind"] for b in batches.values() for e in b}
True
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

AGENT_TOOLS: dict[str, tuple[str, ...]] = {
    "support-bot": ("kb.lookup", "ticket.create", "email.send"),
    "billing-agent": ("db.query", "payments.refund", "email.send"),
    "sre-copilot": ("shell", "http.fetch", "slack.post", "db.query"),
    "code-reviewer": ("repo.read", "code.exec", "ticket.create"),
    "travel-planner": ("search", "calendar.create", "payments.charge"),
    "data-analyst": ("db.query", "code.exec", "http.fetch"),
    "sales-assistant": ("crm.lookup", "email.send", "calendar.create"),
    "hr-helper": ("kb.lookup", "db.query", "email.send"),
    "research-agent": ("search", "http.fetch", "doc.write"),
    "devops-runner": ("shell", "k8s.apply", "slack.post"),
    "email-triage": ("mail.read", "email.send", "ticket.create"),
    "legal-drafter": ("kb.lookup", "doc.write", "email.send"),
}
#: defaults of ``tripwire up`` / ``tripwire traffic``: events per second, seed, seconds before the first bad agent
DEFAULT_RATE = 150.0
DEFAULT_SEED = 7
DEFAULT_FIRST_BAD_AFTER_S = 40.0
SEVERITIES = ("low", "medium", "high", "critical")
MONITORS = ("policy-guard", "pii-filter", "human-review", "action-judge")


@dataclass
class AgentProfile:
    agent_id: str
    tenant: str
    tools: tuple[str, ...]
    calls_per_s: float
    near_miss_rate: float
    incident_rate: float = 0.0005
    error_rate: float = 0.02
    task_id: str = ""
    attempt: int = 1
    calls_in_task: int = 0
    #: 0: attempts are retries (stop at the first success); N: N independent trials per task (an eval harness)
    trials: int = 0
    bad_until: float = 0.0
    seq: itertools.count = field(default_factory=itertools.count)


class SyntheticTraffic:
    """Deterministic (seeded) generator of schema-v1 events, batched per agent."""

    def __init__(
        self,
        seed: int = DEFAULT_SEED,
        rate: float = DEFAULT_RATE,
        agents: int = 12,
        first_bad_after_s: float = DEFAULT_FIRST_BAD_AFTER_S,
        bad_every_s: float = 300.0,
        bad_duration_s: float = 180.0,
        prefix: str = "",
    ) -> None:
        self.rng = random.Random(seed)
        names = list(AGENT_TOOLS)[: max(1, min(agents, len(AGENT_TOOLS)))]
        per_agent = rate / (len(names) * 1.9)  # ~1.9 events per tool call on average
        self.agents = [
            AgentProfile(
                agent_id=f"{prefix}{name}",
                tenant="acme" if i % 3 else "globex",
                tools=AGENT_TOOLS[name],
                calls_per_s=per_agent * self.rng.uniform(0.6, 1.4),
                near_miss_rate=self.rng.uniform(0.01, 0.04),
            )
            for i, name in enumerate(names)
        ]
        if len(self.agents) > 1:  # one agent is evaluated like tau-bench: 4 independent trials per task
            self.agents[1].trials = 4
        self.first_bad_after_s = first_bad_after_s
        self.bad_every_s = bad_every_s
        self.bad_duration_s = bad_duration_s
        self._start: float | None = None
        self._next_bad: float | None = None
        self._bad_cycle = itertools.cycle(self.agents)
        self.episodes: list[tuple[float, str]] = []

    def _maybe_start_episode(self, now: float) -> None:
        if self._start is None:
            self._start = now
            self._next_bad = now + self.first_bad_after_s
        if self.bad_duration_s > 0 and self._next_bad is not None and now >= self._next_bad:
            agent = next(self._bad_cycle)
            agent.bad_until = now + self.bad_duration_s
            self.episodes.append((now, agent.agent_id))
            self._next_bad = now + self.bad_every_s

    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        l, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= l:
                return k
            k += 1

    def tick(self, now: float, dt: float) -> dict[str, list[dict[str, Any]]]:
        """Events for the last ``dt`` seconds, grouped by agent id (one Kafka message each)."""
        self._maybe_start_episode(now)
        out: dict[str, list[dict[str, Any]]] = {}
        for agent in self.agents:
            events: list[dict[str, Any]] = []
            for _ in range(self._poisson(agent.calls_per_s * dt)):
                ts = now - self.rng.random() * dt
                events.extend(self._tool_call(agent, ts, bad=now < agent.bad_until))
            if events:
                events.sort(key=lambda e: e["ts"])
                out[agent.agent_id] = events
        return out

    def _base(self, agent: AgentProfile, ts: float, kind: str) -> dict[str, Any]:
        return {
            "schema_version": "1",
            "event_id": f"{agent.agent_id}-{next(agent.seq)}-{self.rng.getrandbits(32):08x}",
            "ts": int(ts * 1000),
            "agent_id": agent.agent_id,
            "kind": kind,
            "tenant": agent.tenant,
            "task_id": agent.task_id,
            "attempt": agent.attempt,
        }

    def _tool_call(self, agent: AgentProfile, ts: float, bad: bool) -> list[dict[str, Any]]:
        rng = self.rng
        if not agent.task_id:
            agent.task_id = f"{agent.agent_id}:task-{next(agent.seq)}"
            agent.attempt = 1
        tool = rng.choice(agent.tools)
        call_id = f"call-{next(agent.seq)}"
        error = rng.random() < (agent.error_rate * (4 if bad else 1))
        ev = self._base(agent, ts, "tool_call")
        ev.update(
            tool=tool,
            tool_call_id=call_id,
            status="error" if error else "ok",
            latency_ms=round(rng.lognormvariate(math.log(400 if bad else 120), 0.5), 1),
            cost_usd=round(rng.uniform(0.0005, 0.004), 5),
        )
        events = [ev]
        if rng.random() < 0.5:
            llm = self._base(agent, ts, "llm_call")
            llm.update(
                model="gpt-4o-mini",
                input_tokens=rng.randint(200, 3000),
                output_tokens=rng.randint(20, 600),
                latency_ms=round(rng.lognormvariate(math.log(800), 0.4), 1),
                cost_usd=round(rng.uniform(0.0002, 0.01), 5),
            )
            events.append(llm)
        nm_rate = 0.35 if bad else agent.near_miss_rate
        if rng.random() < nm_rate:
            flag = self._base(agent, ts + 0.05, "monitor_flag")
            weights = (0.1, 0.3, 0.45, 0.15) if bad else (0.55, 0.35, 0.09, 0.01)
            flag.update(
                tool=tool,
                tool_call_id=call_id,
                severity=rng.choices(SEVERITIES, weights)[0],
                monitor=rng.choice(MONITORS),
                action=rng.choice(("blocked", "blocked", "modified", "warned")),
            )
            events.append(flag)
        if rng.random() < (0.08 if bad else agent.incident_rate):
            inc = self._base(agent, ts + 0.1, "incident")
            inc.update(tool=tool, tool_call_id=call_id, severity="critical" if bad else rng.choice(("medium", "high")))
            events.append(inc)
        roll = rng.random()
        if roll < 0.01:
            ref = self._base(agent, ts, "refusal")
            ref["should_refuse"] = rng.random() < 0.8
            events.append(ref)
        elif roll < 0.015:
            events.append(self._base(agent, ts, "escalation"))
        agent.calls_in_task += 1
        if agent.calls_in_task >= rng.randint(3, 8):
            events.append(self._task_outcome(agent, ts + 0.2, bad))
        return events

    def _task_outcome(self, agent: AgentProfile, ts: float, bad: bool) -> dict[str, Any]:
        rng = self.rng
        success = rng.random() < (0.45 if bad else 0.8)
        out = self._base(agent, ts, "task_outcome")
        out.update(
            outcome="success" if success else "failure",
            intervened=rng.random() < 0.1,
            human_minutes=round(rng.uniform(0, 3), 2) if rng.random() < 0.1 else 0.0,
        )
        agent.calls_in_task = 0
        if agent.trials:
            out["attempt_kind"] = "trial"
        if agent.attempt >= (agent.trials or 4) or (success and not agent.trials):
            agent.task_id = ""
        else:
            agent.attempt += 1
        return out
