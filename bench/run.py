"""`make bench`: tripwire's benchmarks, each reported against a baseline measured in the same run.

The machine is a noisy 2-core box, so absolute numbers wander; ratios against a
baseline measured minutes apart on the same broker are what to compare.

1. ingest: a real `tripwire worker` consuming pre-produced messages (batched and one
   event per message), against the raw ceiling: a plain aiokafka `getmany` loop doing
   `orjson.loads` + the same pydantic validation on the same messages.
2. detectors: per-event detector updates and bytes per scope (bench/bench_detectors.py).
3. authz: in-process decision p50/p99 and HTTP round trip p50/p99 on the running worker.
4. decision latency: event produced -> breaker decision on `breaker-state`, under a
   steady 5k events/s background load.
5. memory: RSS while 200k distinct agent ids arrive in-process, one event each (bench/bench_memory.py;
   `make bench-memory` runs the 1M case, ~5 min).
6. backtest: `tripwire backtest` on a generated file of 340 agents (fixed seed; 20k events, --backtest-events), in-process
   and as the whole command, against the same-work loop of (1) (bench/bench_backtest.py).

The last line is machine-readable: ``BENCH key=value ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.ops.devstack import DevStack, spawn_worker, topics_env  # noqa: E402
from streams.ops.procutil import stop_process  # noqa: E402
from streams.contract.schema import TraceEvent  # noqa: E402

AGENTS = [f"bench-agent-{i:03d}" for i in range(50)]
TOOLS = ["search", "db.query", "email.send", "http.fetch", "code.exec"]


def say(msg: str) -> None:
    print(msg, flush=True)


def make_events(n: int, seed: int = 1) -> dict[str, list[dict]]:
    """n realistic events spread over AGENTS (tool calls, some flags and llm calls)."""
    import random

    rng = random.Random(seed)
    now = time.time()
    per_agent: dict[str, list[dict]] = {a: [] for a in AGENTS}
    for i in range(n):
        agent = AGENTS[i % len(AGENTS)]
        r = rng.random()
        ev = {"schema_version": "1", "event_id": f"b{seed}-{i}", "ts": int((now - 60 + i * 60 / n) * 1000),
              "agent_id": agent, "tenant": "acme", "task_id": f"{agent}:t{i // 500}", "attempt": 1}
        if r < 0.6:
            ev.update(kind="tool_call", tool=rng.choice(TOOLS), status="ok", latency_ms=round(rng.uniform(5, 300), 1),
                      cost_usd=0.001)
        elif r < 0.9:
            ev.update(kind="llm_call", model="m", input_tokens=500, output_tokens=100, latency_ms=400.0, cost_usd=0.002)
        else:
            ev.update(kind="monitor_flag", tool=rng.choice(TOOLS), severity="low", monitor="guard", action="warned")
        per_agent[agent].append(ev)
    return per_agent


def produce(bootstrap: str, topic: str, per_agent: dict[str, list[dict]], batch: int, security=None) -> int:  # type: ignore[no-untyped-def]
    from streams.kafka.producer import TraceProducer

    p = TraceProducer(bootstrap, topic, security=security)
    messages = 0
    for agent, events in per_agent.items():
        for i in range(0, len(events), batch):
            p.send_batch(agent, events[i:i + batch])
            messages += 1
    p.close()
    return messages


def create_topic(bootstrap: str, topic: str, partitions: int = 4, security=None) -> None:  # type: ignore[no-untyped-def]
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **(security.kafka_python_kwargs() if security else {}))
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


async def _consumer_from_start(bootstrap: str, topic: str):  # type: ignore[no-untyped-def]
    """A started aiokafka consumer without a group, assigned every partition of ``topic`` from offset 0."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=16 * 1024 * 1024)
    await consumer.start()
    parts = consumer.partitions_for_topic(topic)
    while not parts:
        await consumer.topics()
        parts = consumer.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def raw_ceiling(bootstrap: str, topic: str, expect_events: int) -> float:
    """Events/s of a plain aiokafka getmany loop doing decode + validation (no group: assign)."""
    consumer = await _consumer_from_start(bootstrap, topic)
    try:
        seen = 0
        start = None
        validate = TraceEvent.model_validate
        while seen < expect_events:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            if start is None and batches:
                start = time.perf_counter()
            for records in batches.values():
                for rec in records:
                    doc = orjson.loads(rec.value)
                    for obj in (doc if isinstance(doc, list) else (doc,)):
                        validate(obj)
                        seen += 1
        return seen / (time.perf_counter() - (start or time.perf_counter()))
    finally:
        await consumer.stop()


async def full_loop(bootstrap: str, topic: str, expect_events: int) -> float:
    """Events/s of a plain aiokafka getmany loop running the worker's own per-message code
    (TracePipeline -> Monitor: decode, validate, dedupe, detectors) without faust."""
    from breakers.policy import load_policy
    from streams.engine.monitor import Monitor
    from streams.engine.pipeline import TracePipeline
    from streams.settings import Settings

    settings = Settings()
    monitor = Monitor(load_policy(settings.policy_file))
    pipeline = TracePipeline(settings, sink=monitor.ingest)
    consumer = await _consumer_from_start(bootstrap, topic)
    try:
        start = None
        counters = pipeline.counters
        while sum(counters.events.values()) < expect_events:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            if start is None and batches:
                start = time.perf_counter()
            for tp, records in batches.items():
                for rec in records:
                    pipeline.process(rec.key, rec.value, topic=topic, partition=tp.partition, offset=rec.offset)
        return expect_events / (time.perf_counter() - (start or time.perf_counter()))
    finally:
        await consumer.stop()


def start_worker(broker: EmbeddedBroker, tmp: Path, topic: str, app_id: str, url: str | None = None,
                 extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    env = {**(extra_env or {}),
           **topics_env({"traces": topic, "dlq": f"{topic}-dlq", "breaker_state": f"{topic}-state",
                         "breaker_events": f"{topic}-events", "otlp": f"{topic}-otlp",
                         "scope_partials": f"{topic}-partials"}),
           "TRIPWIRE_APP_ID": app_id, "TRIPWIRE_LOG_LEVEL": "warning"}
    worker = spawn_worker(url or broker.url, data_dir=tmp / app_id, log=tmp / f"{app_id}.log", env=env, cwd=ROOT)
    return worker.proc, worker.web


def scrape(web: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{web}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def worker_rate(broker: EmbeddedBroker, tmp: Path, topic: str, expect: int, url: str | None = None,
                extra_env: dict[str, str] | None = None) -> float:
    """Events/s of a real worker on a pre-filled topic, between 5% and 95% of the events."""
    proc, web = start_worker(broker, tmp, topic, f"bench-{uuid.uuid4().hex[:6]}", url, extra_env)
    try:
        marks: list[tuple[float, float]] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                n = float(httpx.get(f"{web}/v1/status", timeout=5).json()["events"])
            except (httpx.HTTPError, ValueError, KeyError):
                n = 0.0
            marks.append((time.perf_counter(), n))
            if n >= expect:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")
            time.sleep(0.1)
        lo = next(t for t, n in marks if n >= 0.05 * expect)
        hi = next(t for t, n in marks if n >= 0.95 * expect)
        return 0.9 * expect / max(hi - lo, 1e-6)
    finally:
        stop_process(proc)


def bench_ingest(broker: EmbeddedBroker, tmp: Path, n_batched: int, n_single: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, n, batch in (("batched", n_batched, 100), ("single", n_single, 1)):
        topic = f"bench-{label}-{uuid.uuid4().hex[:6]}"
        create_topic(broker.bootstrap, topic)
        events = make_events(n, seed=3 if label == "batched" else 4)
        t = time.perf_counter()
        msgs = produce(broker.bootstrap, topic, events, batch)
        say(f"[ingest/{label}] produced {n} events in {msgs} messages ({time.perf_counter() - t:.1f}s)")
        ceiling = asyncio.run(raw_ceiling(broker.bootstrap, topic, n))
        say(f"[ingest/{label}] raw ceiling (aiokafka getmany + orjson + pydantic): {ceiling:,.0f} events/s")
        full = asyncio.run(full_loop(broker.bootstrap, topic, n))
        say(f"[ingest/{label}] same per-event work as the worker, plain aiokafka loop (no faust): {full:,.0f} events/s")
        rate = worker_rate(broker, tmp, topic, n)
        say(f"[ingest/{label}] tripwire worker (faust group + trace reader; decode, validate, dedupe, detectors, decisions): "
            f"{rate:,.0f} events/s = {rate / ceiling:.2f} of the raw ceiling, {rate / full:.2f} of the same-work loop")
        out[f"{label}_rate"], out[f"{label}_ceiling"], out[f"{label}_full"] = rate, ceiling, full
    return out


def bench_tls(broker: EmbeddedBroker, tmp: Path, n: int) -> dict[str, float]:
    """Worker throughput over mutual TLS vs plaintext, same batched events, same run.

    TLS runs through a real nginx stream terminator in front of a second Tansu (tests/kafka_tls.py),
    so the TLS figure also pays the proxy hop; plaintext reads the main broker directly.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.kafka_tls import STREAM_MODULE, nginx_binary, tls_kafka

    binary = nginx_binary()
    if not binary or not STREAM_MODULE.exists():
        say("[tls] skipped: needs nginx with its stream module (apt-get install nginx libnginx-mod-stream)")
        return {}
    events = make_events(n, seed=5)
    plain_topic = f"bench-plain-{uuid.uuid4().hex[:6]}"
    create_topic(broker.bootstrap, plain_topic)
    produce(broker.bootstrap, plain_topic, events, 100)
    plain = worker_rate(broker, tmp, plain_topic, n)
    say(f"[tls] plaintext worker, batched: {plain:,.0f} events/s")
    with tls_kafka(tmp / "tls", binary) as cluster:
        sec = cluster.security()
        topic = f"bench-tls-{uuid.uuid4().hex[:6]}"
        create_topic(cluster.tls_bootstrap, topic, security=sec)
        produce(cluster.tls_bootstrap, topic, events, 100, security=sec)
        tls = worker_rate(broker, tmp, topic, n, url=cluster.url, extra_env=cluster.env())
    say(f"[tls] mutual-TLS worker (via nginx), batched: {tls:,.0f} events/s = {tls / plain:.2f} of plaintext")
    return {"tls_events_per_s": tls, "tls_plain_events_per_s": plain, "tls_ratio": tls / plain}


def sub_bench(script: str, marker: str, rename: dict[str, str] | None = None, args: tuple[str, ...] = (),
              timeout: float = 300) -> dict[str, str]:
    """Run ``bench/<script> args`` and take the ``key=value`` fields of its line starting with ``marker``."""
    say(f"[{script}] python bench/{' '.join((script, *args))}")
    res = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=timeout)
    fields: dict[str, str] = {}
    for line in res.stdout.splitlines():
        if line.startswith(marker):
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                fields[(rename or {}).get(k, k)] = v
        else:
            say("  " + line)
    if res.returncode != 0:
        say(res.stderr[-2000:])
    return fields


def bench_detectors() -> dict[str, str]:
    """Per-event detector updates and bytes per scope (bench/bench_detectors.py)."""
    return sub_bench("bench_detectors.py", "BENCH_DETECTORS ")


def bench_memory(agents: int) -> dict[str, str]:
    """RSS while ``agents`` distinct agent ids arrive, one event each (bench/bench_memory.py; 1M: make bench-memory)."""
    return sub_bench("bench_memory.py", "BENCH ", args=("--agents", str(agents)), timeout=600)


def bench_backtest(events: int) -> dict[str, str]:
    """Backtest rate in-process and for the whole command (bench/bench_backtest.py); minutes on 300k events."""
    return sub_bench("bench_backtest.py", "BENCH_BACKTEST ", args=("--events", str(events)), timeout=3600)


def bench_otlp() -> dict[str, str]:
    """OTLP span mapping (three conventions) against the native trace-event decode, same run (bench/bench_otlp.py)."""
    return sub_bench("bench_otlp.py", "BENCH otlp_spans_per_s=", {"ratio": "otlp_ratio"})


def bench_authz(web: str, n_http: int = 2000) -> dict[str, float]:
    """In-process decision cost (breakers.authz.decide on 10k states) and HTTP round trips."""
    from breakers.authz import decide
    from breakers.policy import load_policy
    from breakers.state_machine import BreakerState

    policy = load_policy(ROOT / "deploy" / "policy" / "default.yaml")
    states = {}
    for i in range(10_000):
        scope = f"agent:a{i}" if i % 2 else f"agent:a{i}/tool:t{i % 7}"
        states[scope] = BreakerState.initial(scope, 0.0, policy)
    states["agent:a5"] = BreakerState("agent:a5", "open", reason="bench")
    samples = []
    for i in range(20_000):
        t = time.perf_counter_ns()
        decide(states, f"a{i % 12_000}", f"t{i % 7}", None, 1.0, policy)
        samples.append(time.perf_counter_ns() - t)
    samples.sort()
    inproc_p50, inproc_p99 = samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000
    say(f"[authz] in-process decide() on 10k states: p50 {inproc_p50:.1f} µs, p99 {inproc_p99:.1f} µs")
    lat = []
    with httpx.Client(timeout=5) as client:
        for i in range(n_http):
            t = time.perf_counter()
            client.get(f"{web}/v1/authz", headers={"X-Agent-Id": f"agent-{i % 50}", "X-Tool": "search"})
            lat.append(time.perf_counter() - t)
    lat.sort()
    http_p50, http_p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000
    say(f"[authz] HTTP GET /v1/authz round trip (httpx keep-alive, loopback): p50 {http_p50:.2f} ms, p99 {http_p99:.2f} ms")
    return {"authz_inproc_p50_us": inproc_p50, "authz_inproc_p99_us": inproc_p99,
            "authz_http_p50_ms": http_p50, "authz_http_p99_ms": http_p99}


def bench_decision_latency(broker: EmbeddedBroker, tmp: Path, rate: float = 5000.0, trips: int = 20) -> dict[str, float]:
    """Produce a tripping burst for a fresh agent under background load; time until breaker-state shows it."""
    import threading

    from kafka import KafkaConsumer, TopicPartition

    from streams.kafka.producer import TraceProducer
    from streams.ops.traffic import SyntheticTraffic

    topic = f"bench-lat-{uuid.uuid4().hex[:6]}"
    for t in (topic, f"{topic}-state"):
        create_topic(broker.bootstrap, t)
    proc, web = start_worker(broker, tmp, topic, f"bench-lat-{uuid.uuid4().hex[:6]}")
    stop = threading.Event()
    sent = [0]

    def background() -> None:
        p = TraceProducer(broker.bootstrap, topic)
        gen = SyntheticTraffic(seed=11, rate=rate, bad_duration_s=0)
        last = time.time()
        while not stop.wait(0.1):
            now = time.time()
            batches = gen.tick(now, now - last)
            last = now
            p.send_grouped(batches)
            sent[0] += sum(len(b) for b in batches.values())
        p.close()

    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{web}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        bg = threading.Thread(target=background, daemon=True)
        bg.start()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        tps = [TopicPartition(f"{topic}-state", p) for p in range(4)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        p = TraceProducer(broker.bootstrap, topic)
        sent_at: dict[str, float] = {}
        seen: dict[str, float] = {}
        time.sleep(3)
        t_start, sent_start = time.time(), sent[0]
        for i in range(trips):
            agent = f"lat-agent-{uuid.uuid4().hex[:8]}"
            now = time.time()
            events = [{"schema_version": "1", "event_id": f"{agent}-{j}", "ts": int(now * 1000), "agent_id": agent,
                       "kind": "tool_call", "tool": "shell", "status": "ok"} for j in range(210)]
            events += [{"schema_version": "1", "event_id": f"{agent}-i{j}", "ts": int(now * 1000), "agent_id": agent,
                        "kind": "incident", "tool": "shell", "severity": "critical"} for j in range(10)]
            sent_at[f"agent:{agent}"] = time.time()
            p.send_batch(agent, events)
            p.flush()
            end = time.time() + 0.5
            while time.time() < end:
                for recs in consumer.poll(timeout_ms=50).values():
                    for rec in recs:
                        scope = rec.key.decode()
                        if scope in sent_at and scope not in seen and b'"open"' in rec.value:
                            seen[scope] = time.time()
        end = time.time() + 10
        while len(seen) < len(sent_at) and time.time() < end:
            for recs in consumer.poll(timeout_ms=100).values():
                for rec in recs:
                    scope = rec.key.decode()
                    if scope in sent_at and scope not in seen and b'"open"' in rec.value:
                        seen[scope] = time.time()
        bg_rate = (sent[0] - sent_start) / (time.time() - t_start)
        consumer.close()
        p.close()
        lat = sorted(seen[s] - sent_at[s] for s in seen)
        missing = len(sent_at) - len(seen)
        if not lat:
            raise RuntimeError("no breaker decision observed")
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        say(f"[decision] produced -> breaker-state 'open', {len(lat)} trips under {bg_rate:,.0f} events/s background: "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {lat[-1] * 1000:.0f} ms" + (f", {missing} not seen" if missing else ""))
        authz = bench_authz(web)
        return {"decision_p50_ms": p50, "decision_p99_ms": p99, "decision_bg_events_per_s": bg_rate, **authz}
    finally:
        stop.set()
        stop_process(proc)


def bench_soak_and_scale(broker: EmbeddedBroker, tmp: Path) -> dict[str, float]:
    """Soak (>= 1M mixed events, worker RSS), 1 vs 2 workers, recovery per 100k scopes (bench/soak.py)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import soak

    return soak.run_all(broker, tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000, help="events for the batched ingest run")
    ap.add_argument("--single", type=int, default=40_000, help="events for the one-event-per-message run")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["ingest", "detectors", "decision", "soak", "tls", "otlp", "memory", "backtest"])
    ap.add_argument("--memory-agents", type=int, default=200_000,
                    help="distinct agent ids of the memory run (~1 min per 200k; `make bench-memory` runs 1M)")
    ap.add_argument("--tls-events", type=int, default=100_000, help="events for the TLS vs plaintext run")
    ap.add_argument("--backtest-events", type=int, default=20_000,
                    help="events of the generated backtest file (the issue #19 target file is 300000: minutes)")
    args = ap.parse_args()
    fields: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="tripwire-bench-") as tmpdir:
        tmp = Path(tmpdir)
        stack = DevStack(tmp / "broker")
        broker = stack.start_broker()
        try:
            if "ingest" not in args.skip:
                r = bench_ingest(broker, tmp, args.events, args.single)
                fields.update(ingest_events_per_s=f"{r['batched_rate']:.0f}",
                              ceiling_events_per_s=f"{r['batched_ceiling']:.0f}",
                              ratio=f"{r['batched_rate'] / r['batched_ceiling']:.2f}",
                              same_work_loop_events_per_s=f"{r['batched_full']:.0f}",
                              transport_ratio=f"{r['batched_rate'] / r['batched_full']:.2f}",
                              single_events_per_s=f"{r['single_rate']:.0f}",
                              single_ceiling_events_per_s=f"{r['single_ceiling']:.0f}",
                              single_ratio=f"{r['single_rate'] / r['single_ceiling']:.2f}")
            if "tls" not in args.skip:
                t = bench_tls(broker, tmp, args.tls_events)
                fields.update({k: f"{v:.2f}" if k == "tls_ratio" else f"{v:.0f}" for k, v in t.items()})
            if "decision" not in args.skip:
                d = bench_decision_latency(broker, tmp)
                fields.update({k: f"{v:.1f}" if "us" in k or "ms" in k else f"{v:.0f}" for k, v in d.items()})
            if "soak" not in args.skip:
                fields.update({k: f"{v:.1f}" for k, v in bench_soak_and_scale(broker, tmp).items()})
        finally:
            stack.stop()
    if "detectors" not in args.skip:
        det = bench_detectors()
        for k in ("detector_update_events_per_s", "counts_update_per_s", "adwin_update_per_s", "bytes_per_scope",
                  "adwin_delay_median"):
            if k in det:
                fields[k] = det[k]
    if "otlp" not in args.skip:
        fields.update(bench_otlp())
    if "memory" not in args.skip:
        fields.update(bench_memory(args.memory_agents))
    if "backtest" not in args.skip:
        bt = bench_backtest(args.backtest_events)
        fields.update(bt)
        loop = fields.get("same_work_loop_events_per_s")
        if loop and bt.get("backtest_events_per_s"):
            ratio = float(bt["backtest_events_per_s"]) / float(loop)
            say(f"[backtest] in-process rate = {ratio:.2f} of the worker's same-work loop (ingest only, no evaluation)")
            fields["backtest_vs_same_work_loop"] = f"{ratio:.2f}"
    print("BENCH " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


if __name__ == "__main__":
    main()
