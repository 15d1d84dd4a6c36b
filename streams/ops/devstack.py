"""One local dev stack: an embedded broker, tripwire's topics and N ``tripwire worker`` processes.

The one launcher behind ``tripwire up``, ``tripwire drill --embedded``, the benchmarks
(``bench/``) and the tests (``tests/support.py``). Every process it starts dies with its
parent (``procutil.spawn_guarded``) and :meth:`DevStack.stop` leaves none behind.

>>> topics_env({"traces": "t1-agent-traces"})
{'TRIPWIRE_TOPICS__TRACES': 't1-agent-traces'}
>>> with DevStack("/tmp/tw-dev") as stack:                           # doctest: +SKIP
...     stack.start_broker(); stack.create_topics(Settings())
...     worker = stack.add_worker(data_dir=stack.data_dir / "w0")
...     stack.wait_ready()
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.security import KafkaSecurity
from streams.ops.procutil import free_port, spawn_guarded, stop_process
from streams.settings import Settings, Topics

#: partitions of each topic on a local stack (enough to show scale-out, cheap to start)
DEV_PARTITIONS = 4


class WorkerExited(RuntimeError):
    """A worker of the stack exited before it became ready."""


def topics_env(topics: Topics | Mapping[str, str]) -> dict[str, str]:
    """``TRIPWIRE_TOPICS__*`` naming a topics block (``settings.Topics`` or field → topic name)."""
    items = topics.model_dump() if isinstance(topics, Topics) else dict(topics)
    return {f"TRIPWIRE_TOPICS__{name.upper()}": str(value) for name, value in items.items()}


@dataclass
class WorkerProcess:
    """A running ``tripwire worker`` subprocess and where to reach it."""

    proc: subprocess.Popen[bytes]
    web: str
    port: int
    log: Path
    env: dict[str, str]
    started: float

    def is_ready(self) -> bool:
        """``/readyz`` answers 200; raises :class:`WorkerExited` if the process is gone."""
        if self.proc.poll() is not None:
            raise WorkerExited(f"the worker exited with code {self.proc.returncode}; see {self.log}")
        import httpx  # lazy: the CLI imports this module for every command

        try:
            return httpx.get(f"{self.web}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90.0, interval: float = 0.25) -> float:
        """Wait for ``/readyz``; seconds from process start. TimeoutError names the log."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for the worker to become ready; "
                                   f"see {self.log}")
            time.sleep(interval)
        return time.monotonic() - self.started

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it lingers."""
        return stop_process(self.proc, timeout=timeout)


def spawn_worker(
    broker_url: str,
    *,
    data_dir: Path,
    log: Path | None = None,
    web_port: int | None = None,
    web_host: str | None = None,
    partitions: int = DEV_PARTITIONS,
    policy_file: Path | None = None,
    config: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    cwd: str | os.PathLike[str] | None = None,
) -> WorkerProcess:
    """Start ``tripwire worker`` against ``broker_url``: ``base_env`` (default: this process's
    environment) updated with ``env``; stdout and stderr go to ``log``."""
    port = web_port or free_port()
    log = log or Path(data_dir).parent / f"worker-{port}.log"
    full_env = dict(os.environ if base_env is None else base_env)
    full_env.update(env or {})
    argv = [sys.executable, "-m", "streams.cli", "worker", "--broker", broker_url]
    if web_host is not None:
        argv += ["--web-host", web_host]
    argv += ["--web-port", str(port), "--data-dir", str(data_dir)]
    if policy_file is not None:
        argv += ["--policy", str(policy_file)]
    argv += ["--partitions", str(partitions)]
    if config is not None:
        argv += ["--config", str(config)]
    argv += list(extra_args)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = spawn_guarded(argv, stdout=fh, stderr=fh, env=full_env, cwd=None if cwd is None else str(cwd))
    host = web_host if web_host not in (None, "0.0.0.0", "::") else "127.0.0.1"
    return WorkerProcess(proc, f"http://{host}:{port}", port, log, full_env, time.monotonic())


class DevStack:
    """An embedded broker (memory-only) and the workers started against it."""

    def __init__(self, data_dir: str | os.PathLike[str], broker_port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.broker = EmbeddedBroker(self.data_dir, port=broker_port)
        self.workers: list[WorkerProcess] = []

    @property
    def webs(self) -> list[str]:
        return [w.web for w in self.workers]

    def start_broker(self, timeout: float = 30.0) -> EmbeddedBroker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.broker.start(timeout=timeout)
        return self.broker

    def local_settings(self, settings: Settings) -> Settings:
        """``settings`` pointed at the embedded broker: loopback PLAINTEXT, whatever a cluster needs."""
        return settings.model_copy(update={"broker": self.broker.url, "kafka": KafkaSecurity()})

    def create_topics(self, settings: Settings) -> list[str]:
        """Create the topics of ``settings`` on the embedded broker; the names created."""
        from streams.kafka.topics import ensure_topics  # kafka-python: ~0.4-1 s of import, not on every CLI start

        return ensure_topics(self.local_settings(settings))

    def add_worker(self, **kwargs: Any) -> WorkerProcess:
        """Start one more worker (arguments of :func:`spawn_worker`, broker aside)."""
        kwargs.setdefault("data_dir", self.data_dir / f"w{len(self.workers)}")
        worker = spawn_worker(self.broker.url, **kwargs)
        self.workers.append(worker)
        return worker

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.25,
                   stop: Callable[[], bool] = lambda: False) -> None:
        """Wait until every worker answers ``/readyz`` (or ``stop()`` is true).

        Raises :class:`WorkerExited` when one exits, TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not stop():
            if all(w.is_ready() for w in self.workers):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for the worker"
                                   f"{'s' if len(self.workers) > 1 else ''} to become ready")
            time.sleep(interval)

    def stop(self, worker_timeout: float = 15.0) -> None:
        """Stop every worker, then the broker."""
        for worker in self.workers:
            worker.stop(timeout=worker_timeout)
        self.broker.stop()

    def __enter__(self) -> DevStack:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
