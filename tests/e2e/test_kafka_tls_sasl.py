"""Kafka over TLS (mutual) and SASL, against real processes.

TLS: Tansu's own TLS listener is not usable in 0.6 (``--cert`` and ``--key`` are mutually
exclusive flags), so a real nginx ``stream`` TLS terminator sits in front of it, the way
many clusters expose Kafka through a TLS proxy, and Tansu advertises the TLS port. It
requires a client certificate signed by the test CA (mutual TLS). A worker, ``tripwire
replay`` and ``tripwire incidents`` then run over it: topic admin (kafka-python), the
faust consumer group, producer and changelogs, the breaker-state reader (aiokafka), and the
incidents reader (kafka-python) all speak TLS, and nothing else can connect.

SASL: Tansu started with ``--authentication`` requires SASL (it offers SCRAM). Its
memory storage cannot hold users while authentication is on (creating one needs an
authenticated connection), so no login can succeed here; the tests check what can be:
the SCRAM exchange reaches the broker, a wrong mechanism or a missing SASL config is
named by the pre-flight probe, and a rejected login ends in a clear error, not a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from helpers.e2e import Tokens, calls, incidents
from helpers.kafka_tls import STREAM_MODULE, TlsKafka, tls_kafka
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.probe import KafkaProbeError, probe
from streams.kafka.security import KafkaSecurity
from streams.ops.procutil import free_port, stop_process
from helpers.support import REPO, Topics, on_ci, require_binary, start_worker, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

RUN = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsKafka]:
    nginx = require_binary("nginx")
    if not STREAM_MODULE.exists():
        reason = f"nginx's stream module ({STREAM_MODULE}) is missing: apt-get install libnginx-mod-stream"
        if on_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    with tls_kafka(tmp_path_factory.mktemp("kafka-tls"), nginx) as cluster:
        yield cluster


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_KAFKA__")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=full, cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


# ------------------------------------------------------------------ TLS
def test_worker_replay_and_incidents_over_mutual_tls(tls_cluster: TlsKafka, tmp_path: Path) -> None:
    topics = Topics(f"tls-{RUN}")
    tokens = Tokens()
    agent = f"tls-bad-{RUN}"
    env = {**tls_cluster.env(), **topics.env()}
    w = start_worker(SimpleNamespace(url=tls_cluster.url), tmp_path, topics, app_id=f"tw-tls-{RUN}",  # type: ignore[arg-type]
                     extra_env={**tls_cluster.env(), **tokens.env()})
    try:
        # ready = topics created, group joined and breaker-state read to its end: all over TLS
        events = calls(agent, 200) + incidents(agent, 20)
        r = cli("replay", str(write_jsonl(tmp_path / "bad.jsonl", events)), "--broker", tls_cluster.url,
                "--topic", topics.traces, "--batch", "20", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"sent {len(events)} events" in r.stdout

        def tripped() -> bool:
            a = httpx.get(f"{w.web}/v1/authz", headers={"X-Agent-Id": agent, "X-Tool": "search"}, timeout=5)
            return a.status_code == 403

        wait_for(tripped, 60, "the agent's breaker to open from traces sent over TLS")
        # the agent-side emitter, over the same mutual TLS
        from streams.emitter import Emitter

        tw = Emitter(tls_cluster.tls_bootstrap, topic=topics.traces, agent_id=f"tls-emitter-{RUN}",
                     security=tls_cluster.security())
        for _ in range(10):
            tw.tool_call("search", latency_ms=12.0)
        assert tw.flush(timeout=30), tw.stats()
        tw.close()
        wait_for(lambda: httpx.get(f"{w.web}/v1/status", timeout=5).json()["events"] >= len(events) + 10, 30,
                 "the replayed and emitted events, consumed over TLS")

        def incident_listed() -> Any:
            out = cli("incidents", "--broker", tls_cluster.url, "--topic", topics.breaker_events, "list", "--json",
                      env=env)
            assert out.returncode == 0, out.stdout + out.stderr
            return [i for i in json.loads(out.stdout)["incidents"] if i["scope"] == f"agent:{agent}"]

        assert wait_for(incident_listed, 30, "the incident, read back from breaker-events over TLS")
    finally:
        stop_process(w.proc)  # type: ignore[arg-type]


def test_a_client_without_its_certificate_is_refused_with_the_reason(tls_cluster: TlsKafka, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "one.jsonl", calls(f"tls-nocert-{RUN}", 1))
    r = cli("replay", str(f), "--broker", tls_cluster.url, env=tls_cluster.env(client_cert=False))
    assert r.returncode == 1
    assert "it may require a client certificate (ssl_certfile/ssl_keyfile)" in r.stderr, r.stderr
    r = cli("replay", str(f), "--broker", tls_cluster.url, env={})
    assert r.returncode == 1
    assert "is it a TLS listener? (security_protocol is PLAINTEXT)" in r.stderr, r.stderr


@pytest.mark.parametrize(("case", "expected"), [
    ("ok", None),
    ("plaintext to TLS", "is it a TLS listener? (security_protocol is PLAINTEXT)"),
    ("untrusted CA", "the broker's TLS certificate was rejected"),
    ("system trust store", "set ssl_cafile to the CA that signed the broker certificate"),
    ("no client certificate", "it may require a client certificate"),
    ("TLS to a plaintext listener", "is this a plaintext listener? (security_protocol is SSL)"),
])
def test_probe_names_what_is_wrong(tls_cluster: TlsKafka, case: str, expected: str | None) -> None:
    sec, bootstrap = tls_cluster.security(), tls_cluster.tls_bootstrap
    if case == "plaintext to TLS":
        sec = KafkaSecurity()
    elif case == "untrusted CA":
        sec = tls_cluster.security(ssl_cafile=tls_cluster.pki["other_ca"])
    elif case == "system trust store":
        sec = tls_cluster.security(ssl_cafile=None)
    elif case == "no client certificate":
        sec = tls_cluster.security(ssl_certfile=None, ssl_keyfile=None)
    elif case == "TLS to a plaintext listener":
        bootstrap = tls_cluster.plain_bootstrap
    if expected is None:
        probe(bootstrap, sec, timeout_s=3)
        return
    with pytest.raises(KafkaProbeError) as info:
        probe(bootstrap, sec, timeout_s=2)
    assert expected in str(info.value)


# ------------------------------------------------------------------ SASL
@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(tmp_path_factory.mktemp("kafka-sasl"), authentication=True)
    b.start()
    yield b
    b.stop()


def scram(user: str = "tripwire", mechanism: str = "SCRAM-SHA-256") -> KafkaSecurity:
    return KafkaSecurity(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, sasl_username=user,
                         sasl_password="not-the-password")


def test_sasl_listener_offers_scram_and_the_probe_names_mismatches(sasl_broker: EmbeddedBroker) -> None:
    probe(sasl_broker.bootstrap, scram(), timeout_s=3)  # the SaslHandshake for SCRAM is accepted
    probe(sasl_broker.bootstrap, scram(mechanism="SCRAM-SHA-512"), timeout_s=3)
    with pytest.raises(KafkaProbeError, match="it probably requires SASL"):
        probe(sasl_broker.bootstrap, KafkaSecurity(), timeout_s=3)
    with pytest.raises(KafkaProbeError, match="probably does not offer that mechanism|does not offer SASL PLAIN"):
        probe(sasl_broker.bootstrap, scram(mechanism="PLAIN"), timeout_s=3)


def test_a_rejected_sasl_login_is_a_clear_error_not_a_hang(sasl_broker: EmbeddedBroker, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "one.jsonl", calls(f"sasl-{RUN}", 1))
    env = {"TRIPWIRE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TRIPWIRE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
           "TRIPWIRE_KAFKA__SASL_USERNAME": f"nobody-{RUN}", "TRIPWIRE_KAFKA__SASL_PASSWORD": "wrong-pw-123"}
    r = cli("replay", str(f), "--broker", sasl_broker.url, env=env)
    assert r.returncode == 1
    assert "check sasl_username/sasl_password for SCRAM-SHA-256" in r.stderr, r.stderr
    assert "wrong-pw-123" not in r.stderr + r.stdout
    # a worker without SASL towards a SASL listener refuses to start, saying why
    w = cli("worker", "--broker", sasl_broker.url, "--web-port", str(free_port()), "--data-dir", str(tmp_path / "d"),
            env={})
    assert w.returncode == 1
    assert "it probably requires SASL" in w.stderr, w.stderr
