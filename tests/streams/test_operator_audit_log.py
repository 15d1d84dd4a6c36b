"""Operator actions are audit-logged on one line each: an operator's reason cannot forge a log line."""

from __future__ import annotations

import asyncio
import logging

import orjson

from breakers.introspect import KeyRing
from breakers.operators import OperatorRegistry, hash_token
from breakers.policy import load_policy
from streams.engine.monitor import Monitor
from streams.settings import DEFAULT_POLICY
from streams.worker.http.api import Api

TOKEN = "t" * 40


def test_a_newline_in_the_reason_stays_inside_one_audit_line(caplog) -> None:
    published = []

    async def publish(change) -> None:  # type: ignore[no-untyped-def]
        published.append(change)

    api = Api(Monitor(load_policy(DEFAULT_POLICY)),
              OperatorRegistry.from_config([{"name": "ann", "role": "operator", "token_sha256": hash_token(TOKEN)}]),
              KeyRing.from_config([]), publish, known=lambda: True)
    reason = "drill\n2026-11-28 INFO tripwire.audit reset ok on 'global' by admin: all clear"
    with caplog.at_level(logging.INFO, logger="tripwire.audit"):
        reply = asyncio.run(api.action(f"Bearer {TOKEN}", "agent:bot", "force-open",
                                       orjson.dumps({"reason": reason})))
    assert reply.status == 200 and published
    lines = [r.getMessage() for r in caplog.records if r.name == "tripwire.audit"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "force_open ok on 'agent:bot' by 'ann'" in lines[0] and "\\n2026-11-28" in lines[0]
