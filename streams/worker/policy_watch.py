"""Policy watching: reload the policy file when it changes (mtime poll) or on SIGHUP.

A policy that fails to load keeps the version in force; either way the outcome goes to
``breaker-events`` (``{"type": "policy_reload", ...}``) and to the reload counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from breakers.policy import Policy, PolicyInvalid, load_policy
from streams.engine.monitor import Monitor

log = logging.getLogger("tripwire.worker")


def mtime(path: os.PathLike[str] | str) -> float:
    """The file's modification time, 0.0 when it cannot be read.

    >>> mtime("/nonexistent/policy.yaml")
    0.0
    """
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


class PolicyWatcher:
    """Applies a changed policy file to the monitor."""

    def __init__(self, path: Path, monitor: Monitor, counters: dict[str, int], events_topic: Any,
                 adjust: Callable[[Policy], Policy] = lambda p: p) -> None:
        self.path = path
        #: applied to every loaded policy (the settings' fail_mode override, streams.worker.app.effective_policy)
        self.adjust = adjust
        self.monitor = monitor
        self.counters = counters
        self.events_topic = events_topic
        self.mtime = mtime(path)
        self.reload_requested = False

    def request_reload(self) -> None:
        """Reload at the next poll even if the file's mtime did not change (SIGHUP)."""
        self.reload_requested = True

    def install_sighup(self) -> None:
        """SIGHUP requests a reload (Unix; a no-op elsewhere)."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.request_reload)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass

    async def poll(self, force: bool = False) -> None:
        """Reload if forced, requested or the file changed; report the outcome."""
        monitor = self.monitor
        current = mtime(self.path)
        if not (force or self.reload_requested or current != self.mtime):
            return
        self.reload_requested = False
        self.mtime = current
        try:
            new = self.adjust(load_policy(self.path))
        except (PolicyInvalid, OSError, ValueError) as exc:
            self.counters["reload_error"] += 1
            log.error("policy reload failed, keeping version %s: %s", monitor.policy.policy_version, exc)
            await self.events_topic.send(key=b"policy", value=orjson.dumps(
                {"type": "policy_reload", "ok": False, "error": str(exc)[:2000], "kept": monitor.policy.policy_version,
                 "ts": time.time()}))
            return
        if new.policy_version != monitor.policy.policy_version:
            old = monitor.policy.policy_version
            monitor.set_policy(new)
            self.counters["reload_ok"] += 1
            log.info("policy reloaded: %s -> %s", old, new.policy_version)
            await self.events_topic.send(key=b"policy", value=orjson.dumps(
                {"type": "policy_reload", "ok": True, "from": old, "to": new.policy_version, "ts": time.time()}))
