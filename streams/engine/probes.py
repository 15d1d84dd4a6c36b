"""Half-open probes: calls made while a scope is half-open report back as probe results.

A good tool call counts towards closing the scope again; a flag, incident or failed call
re-opens it (:func:`breakers.state_machine.record_probe_result`).
"""

from __future__ import annotations

from collections.abc import Callable

from breakers.policy import Policy
from breakers.scope import ScopeError, scopes_for
from breakers.state_machine import HALF_OPEN, record_probe_result
from breakers.state_table import BreakerStates
from streams.contract.schema import TraceEvent
from streams.engine.decisions import Change
from streams.engine.scopes import ScopeIndex


class HalfOpenProbes:
    """Turns an event into probe results of the half-open scopes guarding it."""

    def __init__(self, scopes: ScopeIndex, cache_max: int = 100_000) -> None:
        self.scopes = scopes
        self.cache_max = cache_max
        self._guards: dict[tuple[str, str | None, str | None], tuple[str, ...]] = {}

    def guarding(self, agent: str, tool: str | None, tenant: str | None) -> tuple[str, ...]:
        """The scopes guarding a call of (agent, tool, tenant), most specific first (cached)."""
        key = (agent, tool, tenant)
        hit = self._guards.get(key)
        if hit is None:
            try:
                hit = scopes_for(agent, tool, tenant or None)
            except ScopeError:
                hit = ()
            if len(self._guards) > self.cache_max:
                self._guards.clear()
            self._guards[key] = hit
        return hit

    def record(self, ev: TraceEvent, states: BreakerStates, now: Callable[[], float], policy: Policy) -> list[Change]:
        """Apply ``ev`` as a probe result to every half-open scope guarding it; returns the changes."""
        out = []
        for scope in self.guarding(ev.agent_id, ev.tool, ev.tenant):
            st = states.get(scope)
            if st is None or st.state != HALF_OPEN:
                continue
            if ev.drill_id is not None and self.scopes.agent_of(scope) is None:
                continue  # drill calls are no probe results for cross-agent scopes
            bad = ev.kind in ("monitor_flag", "incident") or (ev.kind == "tool_call" and ev.status == "error")
            if ev.kind == "tool_call" or bad:
                new, transitions = record_probe_result(st, not bad, now(), policy,
                                                       reason=f"probe {ev.kind} {ev.event_id}")
                out.append(Change(new, transitions))
                states[scope] = new
        return out
