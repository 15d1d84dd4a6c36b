"""Test support: a real Kafka-protocol broker (Tansu) and real worker processes.

The broker is session-scoped (started once, ~1 s). Workers are real
``tripwire worker`` subprocesses; each test that needs isolation gets its own
consumer group and topic names, so tests never see each other's events.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from streams.kafka.broker import EmbeddedBroker
from streams.ops.devstack import DEV_PARTITIONS, DevStack, spawn_worker, topics_env
from streams.ops.procutil import free_port, stop_process
from streams.settings import Topics as SettingsTopics

REPO = Path(__file__).resolve().parents[2]


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def shared_data_dir() -> Path:
    """The shared data sets: ``$TRIPWIRE_SHARED_DATA``, else ``../shared/data`` next to the repository."""
    explicit = os.environ.get("TRIPWIRE_SHARED_DATA", "").strip()
    return Path(explicit) if explicit else REPO.parent / "shared" / "data"


#: where the shared data sets are looked for (use :func:`shared_data` to get a file or a clear skip)
SHARED_DATA = shared_data_dir()


def shared_data(name: str) -> Path:
    """Path of the shared data file ``name``; skip with the reason when it is missing, fail when CI=true."""
    path = shared_data_dir() / name
    if path.is_file():
        return path
    reason = (f"shared data file {path} is missing (set TRIPWIRE_SHARED_DATA to the directory holding {name}, "
              "or put the shared data set at ../shared/data next to the repository)")
    if on_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    stack = DevStack(tmp_path_factory.mktemp("broker"))
    stack.start_broker()
    yield stack.broker
    stack.stop()


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
        return topics_env({name: getattr(self, name) for name in SettingsTopics.model_fields})


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
    partitions: int = DEV_PARTITIONS,
    wait_ready: bool = True,
) -> WorkerProc:
    port = port or free_port()
    env = {**topics.env(), "TRIPWIRE_APP_ID": app_id, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    p = spawn_worker(broker.url, data_dir=tmp_path / "data", log=tmp_path / f"worker-{port}.log", web_port=port,
                     partitions=partitions, env=env, extra_args=extra_args or (), cwd=REPO)
    w = WorkerProc(p.proc, p.web, p.port, p.log, topics, app_id, p.env)
    if wait_ready:
        wait_ready_or_fail(w)
    return w


@contextmanager
def ingest_worker(broker: EmbeddedBroker, tmp_path: Path, name: str, token: str) -> Iterator[WorkerProc]:
    """A worker on topics of its own that accepts ``POST /v1/traces`` with the bearer ``token``."""
    from breakers.operators import hash_token

    topics = Topics(f"{name}-{next(_counter)}-{os.getpid()}")
    env = {"TRIPWIRE_METRICS_CACHE_S": "0",
           "TRIPWIRE_INGEST_TOKENS": json.dumps([{"name": name, "token_sha256": hash_token(token)}])}
    w = start_worker(broker, tmp_path, topics, app_id=f"tw-{topics.prefix}", extra_env=env)
    try:
        yield w
    finally:
        stop_process(w.proc)  # type: ignore[arg-type]


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
