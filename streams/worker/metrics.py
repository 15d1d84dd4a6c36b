"""Prometheus exposition for the worker.

Per-event counters are plain Python ints bumped on the hot path (the engine's
:class:`~streams.engine.tallies.IngestCounters`) and turned into metric families only
when Prometheus scrapes (a labelled ``Counter.inc()`` costs ~1.9 µs; an int add costs
~30 ns). Label values that come from traces (agents, tools) pass through the engine's
:class:`~streams.engine.labels.LabelCap`, so a flood of new agent ids cannot blow up
Prometheus: past the cap they report as ``other``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    disable_created_metrics,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams import __version__
from streams.engine.tallies import IngestCounters


def ingest_families(counters: IngestCounters) -> Iterable[Metric]:
    """The ingest stage's tallies (:class:`streams.engine.tallies.IngestCounters`) as metric families."""
    events = CounterMetricFamily("tripwire_events", "Accepted trace events by kind.", labels=["kind"])
    for kind, n in counters.events.items():
        events.add_metric([kind], n)
    rejected = CounterMetricFamily(
        "tripwire_events_rejected",
        "Messages or events sent to the dead-letter topic, by reason.",
        labels=["reason"],
    )
    for reason, n in counters.rejected.items():
        rejected.add_metric([reason], n)
    yield events
    yield rejected
    yield CounterMetricFamily(
        "tripwire_events_duplicate", "Events dropped as duplicate event_id inside the dedupe horizon.",
        value=counters.duplicates,
    )
    yield CounterMetricFamily("tripwire_messages", "Kafka messages consumed from the trace topic.",
                              value=counters.messages)


class CachedExposition:
    """Families from an expensive builder, rendered to exposition text at most every ``ttl_s`` seconds.

    Detector gauges cost a window read per scope, and formatting tens of thousands of series
    costs more than building them; Prometheus scrapes every 15 s and the values move on that
    scale. So the *text* is what is cached: a scrape inside the TTL costs a bytes copy, and a
    scrape storm cannot steal the ingest CPU.

    >>> from prometheus_client.core import GaugeMetricFamily
    >>> calls = []
    >>> def build():
    ...     calls.append(1)
    ...     g = GaugeMetricFamily("tripwire_x", "x.", labels=["a"]); g.add_metric(["1"], 2.0); return [g]
    >>> cached = CachedExposition(build, ttl_s=60)
    >>> b'tripwire_x{a="1"} 2.0' in cached() and cached() is cached(), len(calls)
    (True, 1)
    """

    def __init__(self, fn: Callable[[], Iterable[Metric]], ttl_s: float = 5.0) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Source(lambda: list(fn())))
        self.ttl_s = ttl_s
        self._at = -1e18
        self._text = b""

    def __call__(self) -> bytes:
        import time

        now = time.monotonic()
        if now - self._at >= self.ttl_s:
            self._text = generate_latest(self._registry)
            self._at = now
        return self._text


class _Source(Collector):
    def __init__(self, fn: Callable[[], Iterable[Metric]]) -> None:
        self._fn = fn

    def collect(self) -> Iterable[Metric]:
        return self._fn()


class Metrics:
    """The worker's registry: process metrics, scrape-time sources, histograms."""

    def __init__(self) -> None:
        disable_created_metrics()  # no `*_created` series: they are noise for dashboards and alerts
        self.registry = CollectorRegistry(auto_describe=False)
        self._cached: list[CachedExposition] = []
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.decision_latency = Histogram(
            "tripwire_decision_latency_seconds",
            "Event time of the newest evidence to the breaker decision.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.authz_duration = Histogram(
            "tripwire_authz_request_duration_seconds",
            "Time to answer GET /v1/authz inside the worker.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
            registry=self.registry,
        )
        self.authz_counts: dict[str, int] = {"allow": 0, "deny": 0, "bad_request": 0}
        self.add_source(self._authz_family)
        self._info = GaugeMetricFamily("tripwire_build_info", "tripwire version.", labels=["version"])
        self._info.add_metric([__version__], 1)
        self.add_source(lambda: [self._info])

    def observe_authz(self, decision: str, seconds: float) -> None:
        self.authz_counts[decision] = self.authz_counts.get(decision, 0) + 1
        self.authz_duration.observe(seconds)

    def _authz_family(self) -> Iterable[Metric]:
        fam = CounterMetricFamily("tripwire_authz_requests", "GET /v1/authz answers by decision.", labels=["decision"])
        for decision, n in self.authz_counts.items():
            fam.add_metric([decision], n)
        yield fam

    def add_source(self, fn: Callable[[], Iterable[Metric]]) -> None:
        """Register a callable that yields metric families at scrape time."""
        self.registry.register(_Source(fn))

    def add_cached_source(self, fn: Callable[[], Iterable[Metric]], ttl_s: float) -> None:
        """Register an expensive family builder whose rendered text is reused for ``ttl_s`` (:class:`CachedExposition`)."""
        self._cached.append(CachedExposition(fn, ttl_s))

    def exposition(self) -> bytes:
        """The Prometheus text: the live registry, then each cached source's text (family names never repeat)."""
        return b"".join([generate_latest(self.registry), *(cached() for cached in self._cached)])


def gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> GaugeMetricFamily:
    """Build a gauge family from (label values, value) rows."""
    fam = GaugeMetricFamily(name, doc, labels=labels)
    for values, v in rows:
        fam.add_metric(values, v)
    return fam
