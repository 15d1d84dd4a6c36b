"""Every way in of docs/connect.md against a real broker and one real worker:
the emitter library, POST /v1/traces, and the copy-paste examples of the page itself."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from breakers.operators import hash_token
from streams.emitter import Emitter
from streams.ops.procutil import stop_process
from helpers.support import REPO, Topics, WorkerProc, consume_all, start_worker, wait_for

pytestmark = pytest.mark.broker

INGEST_TOKEN = "ingest-" + uuid.uuid4().hex
OPERATOR_TOKEN = "operator-" + uuid.uuid4().hex
VIEWER_TOKEN = "viewer-" + uuid.uuid4().hex
DOC = REPO / "docs" / "connect.md"


@pytest.fixture(scope="module")
def w(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:  # type: ignore[no-untyped-def]
    topics = Topics(f"connect-{uuid.uuid4().hex[:6]}")
    tmp: Path = tmp_path_factory.mktemp("connect-worker")
    env = {
        "TRIPWIRE_INGEST_TOKENS": json.dumps([{"name": "ci-agent", "token_sha256": hash_token(INGEST_TOKEN)}]),
        "TRIPWIRE_OPERATORS": json.dumps([
            {"name": "oncall", "role": "operator", "token_sha256": hash_token(OPERATOR_TOKEN)},
            {"name": "watcher", "role": "viewer", "token_sha256": hash_token(VIEWER_TOKEN)}]),
    }
    worker = start_worker(broker, tmp, topics, app_id=f"tw-{topics.prefix}", extra_env=env)
    yield worker
    stop_process(worker.proc)  # type: ignore[arg-type]


def _counts(w: WorkerProc) -> dict[str, float]:
    return {k: w.metric("tripwire_events_total", kind=k) for k in
            ("tool_call", "llm_call", "monitor_flag", "task_outcome", "refusal", "incident", "escalation")}


def _wait_counts(w: WorkerProc, before: dict[str, float], want: dict[str, int], what: str) -> None:
    def reached() -> bool:
        now = _counts(w)
        return all(now[k] - before[k] >= n for k, n in want.items())

    wait_for(reached, 30, what)
    now = _counts(w)
    assert {k: now[k] - before[k] for k in want} == want, what


# ------------------------------------------------------------------ emitter
def test_emitter_batches_signs_and_the_worker_counts(broker, w) -> None:  # type: ignore[no-untyped-def]
    before = _counts(w)
    tw = Emitter(broker.bootstrap, topic=w.topics.traces, agent_id="emit-agent", signing_key="s3cret",
                 key_id="k1", batch_max=50, linger_s=0.05)
    for i in range(120):
        tw.tool_call("search", latency_ms=float(i), tool_call_id=f"c{i}")
    tw.monitor_flag("pii-filter", severity="high", tool="send_email")
    tw.llm_call("gpt-4o", input_tokens=10, output_tokens=2)
    tw.task_outcome("success", task_id="t1", attempt=1)
    for agent in ("gw-agent-1", "gw-agent-2"):        # a gateway emitting for other agents
        tw.refusal(agent_id=agent, should_refuse=True)
    assert tw.flush(timeout=20), tw.stats()
    assert tw.close() and tw.sent == 125 and tw.dropped == 0 and tw.failed == 0
    _wait_counts(w, before, {"tool_call": 120, "monitor_flag": 1, "llm_call": 1, "task_outcome": 1, "refusal": 2},
                 "the emitter's 125 events counted by the worker")

    records = _records_holding(broker.bootstrap, w.topics.traces, events=125)
    by_key: dict[bytes, int] = {}
    for rec in records:
        headers = dict(rec.headers)
        assert headers["tripwire-key-id"] == b"k1"
        want = "v1=" + hmac.new(b"s3cret", rec.value, hashlib.sha256).hexdigest()
        assert headers["tripwire-signature"].decode() == want
        batch = orjson.loads(rec.value)
        batch = batch if isinstance(batch, list) else [batch]
        assert len(batch) <= 50 and {e["agent_id"] for e in batch} == {rec.key.decode()}
        by_key[rec.key] = by_key.get(rec.key, 0) + len(batch)
    assert by_key == {b"emit-agent": 123, b"gw-agent-1": 1, b"gw-agent-2": 1}


def test_emitter_flushes_at_interpreter_exit(broker) -> None:  # type: ignore[no-untyped-def]
    topic = f"exit-{uuid.uuid4().hex[:8]}"
    # the first flush connects (kafka-python registers its own atexit close then); with a linger of
    # 30 s the next three events leave only if the emitter's exit flush runs before that close
    code = ("from streams.emitter import Emitter\n"
            f"tw = Emitter({broker.bootstrap!r}, topic={topic!r}, agent_id='exiting-agent', linger_s=30)\n"
            "tw.refusal()\n"
            "assert tw.flush(20)\n"
            "ids = [tw.refusal() for _ in range(3)]\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    records = consume_all(broker.bootstrap, topic, expect=2, timeout=20)
    sizes = [len(v) if isinstance(v := orjson.loads(r.value), list) else 1 for r in records]
    assert {r.key for r in records} == {b"exiting-agent"} and sizes == [1, 3]


def _records_holding(bootstrap: str, topic: str, events: int) -> list:  # type: ignore[type-arg]
    """The topic's records from the beginning, read until they hold ``events`` events (batches unrolled)."""
    def enough() -> list | None:  # type: ignore[type-arg]
        records = consume_all(bootstrap, topic, expect=10**6, timeout=1)
        held = sum(len(v) if isinstance(v := orjson.loads(r.value), list) else 1 for r in records)
        return records if held >= events else None

    return wait_for(enough, 30, f"{events} events on {topic}")


# ------------------------------------------------------------------ HTTP ingest
def _event(i: int, agent: str = "http-agent", **kw: object) -> dict:
    ev = {"schema_version": "1", "event_id": f"http-{uuid.uuid4().hex[:8]}-{i}", "ts": int(time.time() * 1000),
          "agent_id": agent, "kind": "incident", "severity": "low"}
    ev.update(kw)
    return ev


def _post(w: WorkerProc, body: bytes, token: str | None = INGEST_TOKEN,
          content_type: str = "application/x-ndjson") -> httpx.Response:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{w.web}/v1/traces", content=body, headers=headers, timeout=20)


def test_http_ingest_statuses_and_per_line_errors(broker, w) -> None:  # type: ignore[no-untyped-def]
    before = _counts(w)
    ndjson = b"\n".join(orjson.dumps(_event(i, agent=f"http-{i % 2}")) for i in range(3)) + b"\n"
    r = _post(w, ndjson)
    assert (r.status_code, r.json()) == (200, {"accepted": 3, "rejected": []})

    mixed = b"\n".join([orjson.dumps(_event(10)), b"{broken", b"", orjson.dumps(_event(11, kind="nope")),
                        orjson.dumps(_event(12, ts="2026-13-99")), b"[1]", orjson.dumps(_event(13))])
    r = _post(w, mixed, content_type="text/plain; charset=utf-8")
    assert r.status_code == 207
    body = r.json()
    assert body["accepted"] == 2
    assert [(x["line"], x["reason"]) for x in body["rejected"]] == [
        (2, "invalid_json"), (4, "unknown_kind"), (5, "schema"), (6, "not_object")]
    assert all(x["detail"] for x in body["rejected"])

    array = orjson.dumps([_event(20), _event(21, kind="refusal"), {"kind": "tool_call"}])
    r = _post(w, array, token=OPERATOR_TOKEN, content_type="application/json")  # operators may ingest too
    assert r.status_code == 207 and r.json()["accepted"] == 2
    assert [(x["line"], x["reason"]) for x in r.json()["rejected"]] == [(3, "schema")]

    r = _post(w, orjson.dumps([{"kind": "x"}]), content_type="application/json")
    assert r.status_code == 400 and r.json()["accepted"] == 0
    assert _post(w, b"", content_type="application/json").status_code == 400
    assert _post(w, ndjson, token=None).status_code == 401
    assert _post(w, ndjson, token="not-a-token").status_code == 401
    assert _post(w, ndjson, token=VIEWER_TOKEN).status_code == 403
    assert _post(w, ndjson, content_type="application/xml").status_code == 415
    big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert _post(w, big).status_code == 413                 # by Content-Length
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    r = httpx.post(f"{w.web}/v1/traces", content=chunks, timeout=20,  # chunked: no Content-Length
                   headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/x-ndjson"})
    assert r.status_code == 413

    # 3 + 2 + 2 accepted events reach the worker through agent-traces, keyed by agent
    _wait_counts(w, before, {"incident": 6, "refusal": 1}, "the accepted HTTP events counted")
    assert w.metric("tripwire_http_ingest_events_total", result="accepted") >= 7
    assert w.metric("tripwire_http_ingest_requests_total", status="207") == 2
    assert w.metric("tripwire_http_ingest_requests_total", status="413") == 2
    keys = {r.key for r in consume_all(broker.bootstrap, w.topics.traces, expect=10**6, timeout=2)}
    assert {b"http-0", b"http-1", b"http-agent"} <= keys


# ------------------------------------------------------------------ docs/connect.md examples
def _example(marker: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"<!-- example: {marker} -->\s*```\w*\n(.*?)```", text, re.S)
    assert m, f"docs/connect.md has no '{marker}' example block"
    return m.group(1)


def test_docs_emitter_example_runs_against_the_real_broker(broker, w) -> None:  # type: ignore[no-untyped-def]
    code = _example("emitter")
    assert code.count("\n") <= 12, "the emitter example should stay about ten lines"
    assert 'Emitter("127.0.0.1:19092", ' in code
    code = code.replace('Emitter("127.0.0.1:19092", ', f'Emitter("{broker.bootstrap}", topic="{w.topics.traces}", ')
    before = _counts(w)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    _wait_counts(w, before, {"llm_call": 1, "tool_call": 1, "monitor_flag": 1, "task_outcome": 1},
                 "the four events of the docs' emitter example")


def test_docs_curl_example_posts_to_the_worker(w) -> None:  # type: ignore[no-untyped-def]
    script = _example("curl")
    assert "http://127.0.0.1:6066/v1/traces" in script
    before = _counts(w)
    if shutil.which("curl"):
        proc = subprocess.run(["bash", "-c", script.replace("http://127.0.0.1:6066", w.web)], capture_output=True,
                              text=True, timeout=30, env={**os.environ, "TRIPWIRE_INGEST_TOKEN": INGEST_TOKEN})
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout)
    else:  # the same request without curl: the heredoc body, the headers of the example
        body = script.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0].encode()
        answer = _post(w, body).json()
    assert answer == {"accepted": 2, "rejected": []}
    _wait_counts(w, before, {"tool_call": 1, "monitor_flag": 1}, "the two events of the docs' curl example")


def test_docs_authz_example_and_gateway_config(w) -> None:  # type: ignore[no-untyped-def]
    script = _example("authz")
    if shutil.which("curl"):
        proc = subprocess.run(["bash", "-c", script.replace("http://127.0.0.1:6066", w.web)], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "200"   # no breaker open for billing-agent / refund
    else:
        r = httpx.get(f"{w.web}/v1/authz", headers={"X-Agent-Id": "billing-agent", "X-Tool": "refund"})
        assert r.status_code == 200

    conf = REPO / "deploy" / "nginx" / "tool-gateway.conf"
    if conf.exists():  # the nginx excerpt of the page is taken from the shipped gateway config
        text = DOC.read_text()
        excerpt = re.search(r"```nginx\n(.*?)```", text, re.S)
        assert excerpt
        shipped = {" ".join(line.split("#", 1)[0].split()) for line in conf.read_text().splitlines()}
        for line in excerpt.group(1).splitlines():
            line = " ".join(line.split())
            if line and line not in ("}",) and not line.startswith("location"):
                assert line in shipped, f"docs/connect.md nginx line not in {conf.name}: {line}"


def test_collector_config_exports_otlp_json_to_the_otlp_topic() -> None:
    cfg = yaml.safe_load((REPO / "deploy" / "otel" / "collector.yaml").read_text())
    kafka = cfg["exporters"]["kafka"]
    assert kafka["traces"] == {"topic": "otlp_spans", "encoding": "otlp_json"}
    pipeline = cfg["service"]["pipelines"]["traces/tripwire"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["kafka"]
    assert all(p in cfg["processors"] for p in pipeline["processors"])
    assert set(cfg["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    from streams.settings import Topics as SettingsTopics

    assert SettingsTopics().otlp == kafka["traces"]["topic"]
