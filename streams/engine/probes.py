"""Half-open probes: calls made while a scope is half-open report back as probe results.

A half-open breaker lets ``probes_required`` calls through: the gateway asks ``/v1/authz``, which
takes a slot (:func:`breakers.state_machine.probe`, ``probes_remaining`` goes down) for each call it
admits. The call's trace event then reports the result here:

* a flag, incident or failed call re-opens the scope at once (:func:`record_probe_result`), from
  any event, attested or not: unattested traffic may help trip a breaker;
* a good ``tool_call`` counts towards closing it only when it is **attested** (signed by a key bound
  to its agent) and **within the slots authz issued**: at most ``probes_required - probes_remaining``
  clean results count. Anything else is ignored and counted in :attr:`HalfOpenProbes.ignored`
  (``unattested``, ``no_issued_slot``), so forged good traffic never closes a breaker, and calls
  the gateway never admitted (it denied them, or they bypassed it) complete no probation.

With ``simulate_gateway`` (the backtest only: recorded traces have no gateway) an observed good
``tool_call`` takes a slot itself if one remains, as authz would have, then counts.

Drill agents' events (an id with the policy's drill prefix) are no probe results for cross-agent
scopes, as their counts are no evidence there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from breakers.policy import Policy
from breakers.scope import ScopeError, scopes_for
from breakers.state_machine import HALF_OPEN, BreakerState, probe, record_probe_result
from breakers.state_table import BreakerStates
from streams.contract.schema import TraceEvent
from streams.engine.decisions import Change
from streams.engine.scopes import ScopeIndex

#: why a clean probe result was not counted (label values of ``tripwire_probe_results_ignored_total``)
UNATTESTED, NO_ISSUED_SLOT = "unattested", "no_issued_slot"
IGNORED_PROBE_REASONS = (UNATTESTED, NO_ISSUED_SLOT)


def issued_slots(st: BreakerState) -> int:
    """Probe slots authz has issued in this half-open round: ``probes_required - probes_remaining``.

    >>> issued_slots(BreakerState("agent:a", HALF_OPEN, probes_required=5, probes_remaining=3))
    2
    """
    return max(0, st.probes_required - st.probes_remaining)


class HalfOpenProbes:
    """Turns an event into probe results of the half-open scopes guarding it."""

    def __init__(self, scopes: ScopeIndex, cache_max: int = 100_000, simulate_gateway: bool = False) -> None:
        self.scopes = scopes
        self.cache_max = cache_max
        #: backtest only: an observed good tool_call takes a free slot itself (no gateway in a replay)
        self.simulate_gateway = simulate_gateway
        #: clean probe results not counted, by reason (see the module docstring)
        self.ignored: Counter[str] = Counter({r: 0 for r in IGNORED_PROBE_REASONS})
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

    def record(self, ev: TraceEvent, attested: bool, drill: bool, states: BreakerStates,
               now: Callable[[], float], policy: Policy) -> list[Change]:
        """Apply ``ev`` as a probe result to every half-open scope guarding it; returns the changes.

        ``attested``: the event was signed by a key bound to its agent; ``drill``: its agent is a
        drill agent; ``now``: the wall clock.
        """
        kind = ev.kind
        bad = kind == "monitor_flag" or kind == "incident" or (kind == "tool_call" and ev.status == "error")
        if not bad and kind != "tool_call":
            return []
        out = []
        for scope in self.guarding(ev.agent_id, ev.tool, ev.tenant):
            st = states.get(scope)
            if st is None or st.state != HALF_OPEN:
                continue
            if drill and self.scopes.agent_of(scope) is None:
                continue  # drill calls are no probe results for cross-agent scopes
            if not bad:
                if not attested:
                    self.ignored[UNATTESTED] += 1
                    continue
                if self.simulate_gateway:
                    taken, admitted = probe(st, now())
                    if not admitted:
                        self.ignored[NO_ISSUED_SLOT] += 1
                        continue
                    st = taken
                elif st.probes_ok >= issued_slots(st):
                    self.ignored[NO_ISSUED_SLOT] += 1
                    continue
            new, transitions = record_probe_result(st, not bad, now(), policy,
                                                   reason=f"probe {kind} {ev.event_id}")
            out.append(Change(new, transitions))
            states[scope] = new
        return out
