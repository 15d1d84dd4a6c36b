"""Breaker transitions → Alertmanager (API v2): page on escalated/open, resolve on closed.

Posts are queued and sent from the decision timer, in order; a failed post is retried on the
next tick ahead of anything newer (so a late "fire" can never overtake its "resolve"), counted
in ``tripwire_alertmanager_posts_total{result="error"}`` and recorded in ``breaker-events``.
Nothing is dropped. Active alerts are re-posted periodically, as Alertmanager expects.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from breakers.state_machine import ALLOWING, ESCALATED, FORCED_OPEN, HALF_OPEN, OPEN, Transition
from streams.worker.alertmanager import ALERT_ESCALATED, ALERT_OPEN, AsyncAlertmanager, alert_for_transition

log = logging.getLogger("tripwire.alerting")

#: the breaker states each alert stands for (used to resolve after a worker restart)
_ALERTING = {ALERT_ESCALATED: (ESCALATED,), ALERT_OPEN: (OPEN, FORCED_OPEN, HALF_OPEN)}

OnFailure = Callable[[str, str, str], Awaitable[None]]  # (scope, to_state, error)


class AlertDispatcher:
    """Queue of alert posts derived from transitions; see the module docstring."""

    def __init__(self, client: AsyncAlertmanager, counters: dict[str, int], on_failure: OnFailure) -> None:
        self.client = client
        self.counters = counters
        self.on_failure = on_failure
        self.pending: list[tuple[str, dict[str, Any]]] = []

    def note(self, t: Transition) -> None:
        """Queue what transition ``t`` means for the pager (nothing for same-state actions)."""
        if t.from_state != t.to_state:
            self.pending.append((t.to_state, {"scope": t.scope, "from": t.from_state, "reason": t.reason,
                                              "budget": t.budget, "drill": t.drill, "evidence": t.evidence}))

    async def flush(self) -> None:
        """Send the queue in order; stop at the first failure and keep the rest at the front."""
        batch, self.pending = self.pending, []
        for i, (to_state, info) in enumerate(batch):
            try:
                await self._post(to_state, info)
                self.counters["alert_ok"] += 1
            except Exception as exc:  # noqa: BLE001 - retried on the next tick, never dropped
                self.counters["alert_error"] += 1
                log.warning("alertmanager post failed (will retry): %s", exc)
                self.pending[:0] = batch[i:]
                await self.on_failure(info["scope"], to_state, str(exc)[:300])
                return

    async def _post(self, to_state: str, info: dict[str, Any]) -> None:
        client, scope, drill = self.client, info["scope"], bool(info["drill"])
        name = alert_for_transition(to_state)
        if name is not None:
            other = ALERT_OPEN if name == ALERT_ESCALATED else ALERT_ESCALATED
            await client.fire(scope, summary=f"breaker {to_state}: {info['reason']}"[:500],
                              evidence=info["evidence"], alertname=name, budget=info["budget"],
                              severity="page", drill=drill)
            if (other, scope) in client.active:
                await client.resolve(scope, alertname=other, drill=drill)
        elif to_state in ALLOWING:
            for name in (ALERT_ESCALATED, ALERT_OPEN):
                if (name, scope) in client.active or info["from"] in _ALERTING[name]:
                    await client.resolve(scope, alertname=name, drill=drill)

    async def repost(self) -> None:
        try:
            await self.client.repost_due()
        except Exception as exc:  # noqa: BLE001 - the next re-post tries again
            self.counters["alert_error"] += 1
            log.warning("alertmanager re-post failed: %s", exc)
