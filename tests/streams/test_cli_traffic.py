"""`tripwire traffic` sends to the configured trace topic (TRIPWIRE_TOPICS__TRACES), not a hard-coded one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from helpers.support import REPO, consume_all

pytestmark = pytest.mark.broker


def test_traffic_honours_the_configured_trace_topic(broker) -> None:  # type: ignore[no-untyped-def]
    topic = f"custom-traces-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env.update({"TRIPWIRE_BROKER": broker.url, "TRIPWIRE_TOPICS__TRACES": topic})
    done = subprocess.run([sys.executable, "-m", "streams.cli", "traffic", "--duration", "1.5", "--rate", "200"],
                          env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"to {topic}" in done.stdout, done.stdout
    records = consume_all(broker.bootstrap, topic, expect=5, timeout=20)
    assert len(records) >= 5
    first = json.loads(records[0].value)
    events = first if isinstance(first, list) else [first]
    assert events and all(e["agent_id"] == records[0].key.decode() for e in events)
