"""Test support: a real Kafka-protocol broker (Tansu) and real worker processes.

The broker is session-scoped (started once, ~1 s). Workers are real
``tripwire worker`` subprocesses; each test that needs isolation gets its own
consumer group and topic names, so tests never see each other's events.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
if not SHARED_DATA.exists():
    SHARED_DATA = Path("/work/shared/data")

from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.ops.procutil import free_port, spawn_guarded, stop_process  # noqa: E402


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


_counter = itertools.count()


@dataclass
class Topics:
    prefix: str
    traces: str = ""
    dlq: str = ""
    breaker_state: str = ""
    breaker_events: str = ""
    otlp: str = ""
    scope_partials: str = ""

    def __post_init__(self) -> None:
        self.traces = f"{self.prefix}-agent-traces"
        self.dlq = f"{self.prefix}-agent-traces-dlq"
        self.breaker_state = f"{self.prefix}-breaker-state"
        self.breaker_events = f"{self.prefix}-breaker-events"
        self.otlp = f"{self.prefix}-otlp"
        self.scope_partials = f"{self.prefix}-scope-partials"

    def env(self) -> dict[str, str]:
        return {
            "TRIPWIRE_TOPICS__TRACES": self.traces,
            "TRIPWIRE_TOPICS__DLQ": self.dlq,
            "TRIPWIRE_TOPICS__BREAKER_STATE": self.breaker_state,
            "TRIPWIRE_TOPICS__BREAKER_EVENTS": self.breaker_events,
            "TRIPWIRE_TOPICS__OTLP": self.otlp,
            "TRIPWIRE_TOPICS__SCOPE_PARTIALS": self.scope_partials,
        }


@dataclass
class WorkerProc:
    proc: object
    web: str
    port: int
    log: Path
    topics: Topics
    app_id: str
    env: dict[str, str] = field(default_factory=dict)

    def metrics_text(self) -> str:
        return httpx.get(f"{self.web}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for fam in text_string_to_metric_families(self.metrics_text()):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; return its value or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


def start_worker(
    broker: EmbeddedBroker,
    tmp_path: Path,
    topics: Topics,
    app_id: str,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    partitions: int = 4,
    wait_ready: bool = True,
) -> WorkerProc:
    port = port or free_port()
    log = tmp_path / f"worker-{port}.log"
    env = dict(os.environ)
    env.update(topics.env())
    env.update({"TRIPWIRE_APP_ID": app_id, "PYTHONUNBUFFERED": "1"})
    env.update(extra_env or {})
    argv = [sys.executable, "-m", "streams.cli", "worker", "--broker", broker.url, "--web-port", str(port),
            "--data-dir", str(tmp_path / "data"), "--partitions", str(partitions), *(extra_args or [])]
    with open(log, "ab") as fh:
        proc = spawn_guarded(argv, stdout=fh, stderr=fh, env=env, cwd=str(REPO))
    w = WorkerProc(proc, f"http://127.0.0.1:{port}", port, log, topics, app_id, env)
    if wait_ready:
        wait_ready_or_fail(w)
    return w


def wait_ready_or_fail(w: WorkerProc, timeout: float = 90) -> None:
    def ready() -> bool:
        if w.proc.poll() is not None:  # type: ignore[attr-defined]
            raise AssertionError(f"worker exited early:\n{w.log_tail()}")
        return httpx.get(f"{w.web}/readyz", timeout=2).status_code == 200

    try:
        wait_for(ready, timeout, "worker /readyz")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{w.log_tail()}") from None


@pytest.fixture
def isolated_topics() -> Topics:
    return Topics(f"t{next(_counter)}-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def worker(broker: EmbeddedBroker, tmp_path: Path, isolated_topics: Topics) -> Iterator[WorkerProc]:
    """A fresh worker with its own topics and consumer group."""
    w = start_worker(broker, tmp_path, isolated_topics, app_id=f"tw-{isolated_topics.prefix}")
    yield w
    stop_process(w.proc)  # type: ignore[arg-type]


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list:  # type: ignore[type-arg]
    """Read ``topic`` from the beginning until ``expect`` records arrived (or timeout)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        parts = wait_for(lambda: consumer.partitions_for_topic(topic), 20, f"topic {topic} metadata")
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        consumer.close()


_PACKAGES = {"promtool": "prometheus", "prometheus": "prometheus", "amtool": "prometheus-alertmanager",
             "prometheus-alertmanager": "prometheus-alertmanager", "nginx": "nginx"}


def require_binary(*names: str) -> str:
    """Path of the first of ``names`` found (PATH or /usr/sbin); skip, or fail when CI=true."""
    import shutil

    for name in names:
        path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
        if path:
            return path
    pkg = _PACKAGES.get(names[0], names[0])
    reason = f"{' / '.join(names)} not found (install the Debian package `{pkg}`: apt-get install {pkg})"
    if on_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)
