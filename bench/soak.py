"""Soak and scale-out figures for `make bench` (driven from bench/run.py, or run alone).

1. soak: >= 1M mixed events (batched messages of 100; ~10% bad messages or bad batch
   elements, ~2% duplicate re-sends; thousands of agents) produced while a real worker
   consumes them; the worker's RSS (/proc/<pid>/status VmRSS) after warm-up and at the
   end, and events/s.
2. scale: events/s of 1 worker vs 2 workers (one consumer group) on the same pre-filled topic.
3. recovery: start-to-ready time of a worker whose scope-state changelog holds 100k
   agent×tool scopes (20k agents × 5 tools), per 100k scopes.

``python bench/soak.py`` prints every figure and a ``SOAK key=value ...`` line.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.ops.devstack import DevStack, spawn_worker, topics_env  # noqa: E402
from streams.ops.procutil import free_port  # noqa: E402

TOOLS = ["search", "db.query", "email.send", "http.fetch", "code.exec"]


def say(msg: str) -> None:
    print(msg, flush=True)


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def create_topics(bootstrap: str, names: list[str], partitions: int = 4) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()


class Worker:
    """A real ``tripwire worker`` subprocess on its own topics prefix."""

    def __init__(self, broker: EmbeddedBroker, tmp: Path, prefix: str, app_id: str, env: dict[str, str] | None = None):
        e = {**topics_env({"traces": f"{prefix}-traces", "dlq": f"{prefix}-dlq", "breaker_state": f"{prefix}-state",
                           "breaker_events": f"{prefix}-events", "otlp": f"{prefix}-otlp"}),
             "TRIPWIRE_APP_ID": app_id, "TRIPWIRE_LOG_LEVEL": "warning", **(env or {})}
        port = free_port()
        self.process = spawn_worker(broker.url, data_dir=tmp / app_id, log=tmp / f"{app_id}-{port}.log", env=e,
                                    web_port=port, cwd=ROOT)
        self.port, self.web, self.started = self.process.port, self.process.web, self.process.started
        self.proc: subprocess.Popen[bytes] = self.process.proc

    def metric(self, name: str) -> float:
        total = 0.0
        for line in httpx.get(f"{self.web}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds from process start to /readyz 200."""
        return self.process.wait_ready(timeout=timeout, interval=0.1)

    def stop(self) -> None:
        self.process.stop()


def soak_messages(n_events: int, agents: int, seed: int = 7):  # type: ignore[no-untyped-def]
    """Yield (key, value) messages: batches of 100 with ~10% bad input and ~2% re-sent duplicates."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    sent = 0
    i = 0
    last: tuple[bytes, bytes] | None = None
    while sent < n_events:
        agent = f"soak-{rng.randrange(agents):05d}"
        r = rng.random()
        if r < 0.05:
            yield agent.encode(), b'[{"schema_version":"1", "event_id": broken'      # invalid JSON
            continue
        if r < 0.07 and last is not None:
            yield last                                                              # a retry: all duplicates
            continue
        batch = []
        for _ in range(100):
            i += 1
            ev = {"schema_version": "1", "event_id": f"s{seed}-{i}", "ts": now_ms - rng.randrange(600_000),
                  "agent_id": agent, "kind": "tool_call", "tool": rng.choice(TOOLS), "status": "ok"}
            x = rng.random()
            if x < 0.05:
                ev["kind"] = "monitor_flag"
                ev["severity"] = "low"
            elif x < 0.08:
                ev.pop("event_id")                                                   # schema reject
            elif x < 0.09:
                ev["schema_version"] = "9"                                           # unsupported version
            batch.append(ev)
        sent += 100
        last = (agent.encode(), orjson.dumps(batch))
        yield last


def bench_soak(broker: EmbeddedBroker, tmp: Path, n_events: int = 1_000_000, agents: int = 5000) -> dict[str, float]:
    """RSS of a worker before/after >= 1M mixed events, and its events/s (accepted + rejected + duplicates)."""
    from kafka import KafkaProducer

    prefix = f"soak-{uuid.uuid4().hex[:6]}"
    create_topics(broker.bootstrap, [f"{prefix}-traces", f"{prefix}-dlq", f"{prefix}-state", f"{prefix}-events"])
    w = Worker(broker, tmp, prefix, f"soak-{uuid.uuid4().hex[:6]}",
               env={"TRIPWIRE_DEDUPE_MAX_IDS": "50000", "TRIPWIRE_METRICS_CACHE_S": "30"})
    w.wait_ready()
    done = threading.Event()
    produced = [0]

    def produce() -> None:
        try:
            _produce()
        finally:
            done.set()

    def _produce() -> None:
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=512 * 1024,
                          max_request_size=8 * 1024 * 1024)
        for key, value in soak_messages(n_events, agents):
            p.send(f"{prefix}-traces", key=key, value=value)
            produced[0] += 1
        p.flush()
        p.close()

    threading.Thread(target=produce, daemon=True).start()
    samples: list[tuple[float, float, float]] = []   # (t, messages consumed, rss)
    t0 = time.monotonic()
    try:
        while True:
            msgs = w.metric("tripwire_messages_total")
            samples.append((time.monotonic() - t0, msgs, rss_mb(w.proc.pid)))
            if done.is_set() and msgs >= produced[0]:
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError("soak did not finish in 10 min")
            time.sleep(1.0)
        events = w.metric("tripwire_events_total")
        rejected = w.metric("tripwire_events_rejected_total")
        dups = w.metric("tripwire_events_duplicate_total")
    finally:
        w.stop()
    total_msgs = samples[-1][1]
    warm = next(s for s in samples if s[1] >= 0.2 * total_msgs)
    elapsed = samples[-1][0] - samples[0][0]
    out = {"soak_events": events + rejected + dups, "soak_accepted": events, "soak_rejected": rejected,
           "soak_duplicates": dups, "soak_events_per_s": (events + rejected + dups) / max(elapsed, 1e-6),
           "soak_rss_warm_mb": warm[2], "soak_rss_end_mb": samples[-1][2],
           "soak_rss_max_mb": max(s[2] for s in samples if s[1] >= 0.2 * total_msgs)}
    say(f"[soak] {out['soak_events']:,.0f} events ({events:,.0f} accepted, {rejected:,.0f} rejected, {dups:,.0f} "
        f"duplicates) from {agents} agents in {elapsed:.0f}s: {out['soak_events_per_s']:,.0f} events/s; worker RSS "
        f"{warm[2]:.0f} MiB after warm-up (20%), {samples[-1][2]:.0f} MiB at the end, max {out['soak_rss_max_mb']:.0f}")
    return out


def _status_events(w: "Worker") -> float:
    try:
        return float(httpx.get(f"{w.web}/v1/status", timeout=5).json()["events"])
    except (httpx.HTTPError, ValueError, KeyError):
        return 0.0


def _drain_rate(workers: list["Worker"], expect: float) -> float:
    """Events/s of ``workers`` together, between 5% and 95% of ``expect`` (cheap /v1/status polls)."""
    marks: list[tuple[float, float]] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        n = sum(_status_events(w) for w in workers)
        marks.append((time.perf_counter(), n))
        if n >= expect:
            break
        time.sleep(0.1)
    lo = next(t for t, n in marks if n >= 0.05 * expect)
    hi = next(t for t, n in marks if n >= 0.95 * expect)
    return 0.9 * expect / max(hi - lo, 1e-6)


def bench_scale(broker: EmbeddedBroker, tmp: Path, n_events: int = 300_000) -> dict[str, float]:
    """1 worker vs 2 workers (one group): the group is formed and stable first, then the load arrives.

    (Pre-filling the topic before the second worker joins would let the first drain part of it and
    the rebalance re-deliver some: both inflate the 2-worker figure.)
    """
    from kafka import KafkaProducer

    now_ms = int(time.time() * 1000)
    messages = []
    for m in range(n_events // 100):
        agent = f"scale-{m % 400:03d}"
        batch = [{"schema_version": "1", "event_id": f"x{m}-{j}", "ts": now_ms, "agent_id": agent,
                  "kind": "tool_call", "tool": TOOLS[j % 5], "status": "ok"} for j in range(100)]
        messages.append((agent.encode(), orjson.dumps(batch)))
    out: dict[str, float] = {}
    for n in (1, 2):
        prefix = f"scale{n}-{uuid.uuid4().hex[:6]}"
        create_topics(broker.bootstrap, [f"{prefix}-traces", f"{prefix}-dlq", f"{prefix}-state", f"{prefix}-events"])
        workers = [Worker(broker, tmp, prefix, prefix) for _ in range(n)]
        try:
            for w in workers:
                w.wait_ready()
            time.sleep(3)  # let the group settle (no rebalance during the measurement)
            for w in workers:
                w.wait_ready()
            p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=512 * 1024,
                              max_request_size=8 * 1024 * 1024)

            def produce() -> None:
                for key, value in messages:
                    p.send(f"{prefix}-traces", key=key, value=value)
                p.flush()

            t = threading.Thread(target=produce, daemon=True)
            t.start()
            out[f"scale_{n}_workers_events_per_s"] = _drain_rate(workers, n_events)
            t.join()
            p.close()
        finally:
            for w in workers:
                w.stop()
        say(f"[scale] {n} worker(s), one group, {n_events:,} events arriving at once: "
            f"{out[f'scale_{n}_workers_events_per_s']:,.0f} events/s")
    return out


def bench_recovery(broker: EmbeddedBroker, tmp: Path, agents: int = 20_000, tools: int = 5) -> dict[str, float]:
    """Start-to-ready of a worker whose changelog holds ``agents`` × ``tools`` agent×tool scopes."""
    from kafka import KafkaProducer

    prefix = f"rec-{uuid.uuid4().hex[:6]}"
    create_topics(broker.bootstrap, [f"{prefix}-traces", f"{prefix}-dlq", f"{prefix}-state", f"{prefix}-events"])
    app_id = f"rec-{uuid.uuid4().hex[:6]}"
    env = {"TRIPWIRE_CHECKPOINT_INTERVAL_S": "1"}
    empty = Worker(broker, tmp, prefix, f"{app_id}-empty", env)
    baseline = empty.wait_ready()
    empty.stop()
    w = Worker(broker, tmp, prefix, app_id, env)
    w.wait_ready()
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=512 * 1024)
    now_ms = int(time.time() * 1000)
    for a in range(agents):
        agent = f"rec-{a:05d}"
        batch = [{"schema_version": "1", "event_id": f"{agent}-{t}", "ts": now_ms, "agent_id": agent,
                  "kind": "tool_call", "tool": TOOLS[t % len(TOOLS)] + ("" if t < len(TOOLS) else str(t)),
                  "status": "ok"} for t in range(tools)]
        p.send(f"{prefix}-traces", key=agent.encode(), value=orjson.dumps(batch))
    p.flush()
    p.close()
    deadline = time.monotonic() + 300
    while w.metric("tripwire_events_total") < agents * tools and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(4)  # a few checkpoint intervals: every agent is in the changelog
    w.stop()
    w2 = Worker(broker, tmp, prefix, app_id, env)
    try:
        ready = w2.wait_ready(timeout=600)
    finally:
        w2.stop()
    scopes = agents * tools
    per_100k = (ready - baseline) * 100_000 / scopes
    say(f"[recovery] worker start -> ready with {scopes:,} agent×tool scopes ({agents:,} agents) in the changelog: "
        f"{ready:.1f}s (empty changelog: {baseline:.1f}s) -> {per_100k:.1f}s per 100k scopes")
    return {"recovery_ready_s": ready, "recovery_empty_ready_s": baseline, "recovery_s_per_100k_scopes": per_100k}


def run_all(broker: EmbeddedBroker, tmp: Path, soak_events: int = 1_000_000) -> dict[str, float]:
    """Every figure of this module (bench/run.py calls this unless `--skip soak`)."""
    out: dict[str, float] = {}
    out.update(bench_soak(broker, tmp, soak_events))
    out.update(bench_scale(broker, tmp))
    out.update(bench_recovery(broker, tmp))
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--only", choices=["soak", "scale", "recovery"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tripwire-soak-") as tmpdir:
        tmp = Path(tmpdir)
        stack = DevStack(tmp / "broker")
        broker = stack.start_broker()
        try:
            if args.only == "soak":
                out = bench_soak(broker, tmp, args.events)
            elif args.only == "scale":
                out = bench_scale(broker, tmp)
            elif args.only == "recovery":
                out = bench_recovery(broker, tmp)
            else:
                out = run_all(broker, tmp, args.events)
        finally:
            stack.stop()
    print("SOAK " + " ".join(f"{k}={v:.1f}" for k, v in out.items()), flush=True)


if __name__ == "__main__":
    main()
