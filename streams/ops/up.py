"""``tripwire up``: embedded broker + worker + synthetic traffic, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from breakers.operators import generate_token, hash_token
from streams.kafka.security import KafkaSecurity
from streams.ops.devstack import DevStack
from streams.ops.traffic import DEFAULT_FIRST_BAD_AFTER_S, DEFAULT_RATE, DEFAULT_SEED
from streams.settings import Settings

console = Console(stderr=False, highlight=False, soft_wrap=True)


class TrafficThread(threading.Thread):
    """Feeds synthetic traffic (or loops a JSONL file) into the broker until stopped."""

    def __init__(self, settings: Settings, rate: float, traffic_file: Path | None, seed: int = DEFAULT_SEED,
                 first_bad_after_s: float = DEFAULT_FIRST_BAD_AFTER_S) -> None:
        super().__init__(name="tripwire-traffic", daemon=True)
        self.settings = settings
        self.rate = rate
        self.first_bad_after_s = first_bad_after_s
        self.traffic_file = traffic_file
        self.seed = seed
        self.stop_event = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        from streams.kafka.producer import TraceProducer

        try:
            producer = TraceProducer(self.settings.bootstrap, self.settings.topics.traces)
        except Exception as exc:  # noqa: BLE001 - reported on the console
            self.error = str(exc)
            return
        try:
            if self.traffic_file is not None:
                self._loop_file(producer)
            else:
                self._synthetic(producer)
        except Exception as exc:  # noqa: BLE001
            self.error = f"traffic stopped: {exc}"
        finally:
            producer.close()

    def _synthetic(self, producer: Any) -> None:
        from streams.ops.traffic import SyntheticTraffic

        gen = SyntheticTraffic(seed=self.seed, rate=self.rate, first_bad_after_s=self.first_bad_after_s)
        last = time.time()
        while not self.stop_event.wait(0.25):
            now = time.time()
            producer.send_grouped(gen.tick(now, now - last))
            last = now

    def _loop_file(self, producer: Any) -> None:
        from streams.ops.replay import replay_file

        assert self.traffic_file is not None
        while not self.stop_event.is_set():
            replay_file(self.traffic_file, producer, rebase=True, speed=60.0, batch=20)


class PortBusy(RuntimeError):
    """A port ``tripwire up`` needs is taken by another process."""


def port_taken(host: str, port: int) -> bool:
    """True when a listening socket holds ``host:port`` (TIME_WAIT leftovers do not count).

    >>> import socket
    >>> with socket.socket() as s:
    ...     s.bind(("127.0.0.1", 0)); s.listen(); port = s.getsockname()[1]
    ...     port_taken("127.0.0.1", port)
    True
    """
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(settings: Settings, broker_port: int) -> None:
    """Refuse to start (``PortBusy``, one line with the fix) when the worker's or the broker's port is taken:
    otherwise "tripwire is up" would report another process's figures."""
    for what, host, port, flag in (("worker HTTP", settings.web_host, settings.web_port, "--web-port"),
                                   ("embedded broker", "127.0.0.1", broker_port, "--broker-port")):
        if port_taken(host, port):
            raise PortBusy(f"the {what} port {host}:{port} is already in use (another `tripwire up` or worker?); "
                           f"stop that process or pick a free port with {flag}")


def write_admin_token(data_dir: Path) -> Path:
    """A local admin token for the embedded stack, readable only by this user (0600)."""
    path = data_dir / "admin.token"
    if not path.exists() or not path.read_text().strip():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(generate_token() + "\n")
    return path


def _status(web: str) -> str:
    try:
        st = httpx.get(f"{web}/v1/status", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return "worker not answering"
    b = st.get("breakers", {})
    return (f"events={st['events']} rejected={st['rejected']} agents={st['agents']} breakers "
            f"open={b.get('open', 0) + b.get('forced_open', 0)} escalated={b.get('escalated', 0)} "
            f"half_open={b.get('half_open', 0)} shadow={b.get('shadow', 0)}")


def run_up(
    settings: Settings,
    broker_port: int,
    traffic: bool = True,
    traffic_file: Path | None = None,
    rate: float = DEFAULT_RATE,
    status_every_s: float = 10.0,
    first_bad_after_s: float = DEFAULT_FIRST_BAD_AFTER_S,
    config: str | os.PathLike[str] | None = None,
) -> int:
    """Run the embedded stack in the foreground until SIGINT/SIGTERM (``config``: the YAML file the
    worker reads too)."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = DevStack(data_dir, broker_port=broker_port)
    broker = stack.broker
    feeder: TrafficThread | None = None
    web = settings.web_url
    try:
        console.print(f"[bold]tripwire up[/bold]: starting the embedded broker (Tansu) on {broker.bootstrap} …")
        stack.start_broker()
        # the embedded broker is loopback PLAINTEXT, whatever TLS/SASL the environment configures for a cluster
        settings = settings.model_copy(update={"broker": broker.url, "kafka": KafkaSecurity()})
        stack.create_topics(settings)
        log_path = data_dir / "worker.log"
        console.print(f"starting the worker (log: {log_path}) …")
        token_file = write_admin_token(data_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_KAFKA__")}
        env["TRIPWIRE_KAFKA__SECURITY_PROTOCOL"] = "PLAINTEXT"
        env["TRIPWIRE_OPERATORS"] = json.dumps(
            [*settings.operators, {"name": "local-admin", "role": "admin", "token_sha256": hash_token(
                token_file.read_text().strip())}])
        worker = stack.add_worker(data_dir=data_dir, log=log_path, web_host=settings.web_host,
                                  web_port=settings.web_port, policy_file=settings.policy_file,
                                  partitions=settings.partitions, config=config, base_env=env)
        stack.wait_ready(timeout=90, stop=stop.is_set)
        if stop.is_set():
            return 0
        if traffic:
            feeder = TrafficThread(settings, rate, traffic_file, first_bad_after_s=first_bad_after_s)
            feeder.start()
        what = f"looping {traffic_file}" if traffic_file else ("synthetic agents" if traffic else "no traffic")
        console.print(
            "\n[bold green]tripwire is up[/bold green]\n"
            f"  broker     kafka://{broker.bootstrap}   (memory-only: state lasts as long as this process)\n"
            f"  metrics    {web}/metrics\n"
            f"  health     {web}/healthz   ready: {web}/readyz\n"
            f"  breakers   {web}/v1/breakers\n"
            f"  authz      {web}/v1/authz  (headers X-Agent-Id, X-Tool)\n"
            f"  operator   admin token in {token_file} (used by `tripwire breakers …` and `tripwire drill`)\n"
            f"  traffic    {what}\n"
            "  Ctrl-C stops everything.\n"
        )
        next_status = time.monotonic() + 3
        while not stop.wait(0.2):
            if worker.proc.poll() is not None:
                console.print(f"[red]the worker exited with code {worker.proc.returncode}; see {log_path}[/red]")
                return 1
            if feeder is not None and feeder.error:
                console.print(f"[red]{feeder.error}[/red]")
                feeder.error = None
            if time.monotonic() >= next_status:
                console.print(time.strftime("%H:%M:%S"), _status(web))
                next_status = time.monotonic() + status_every_s
        return 0
    except Exception as exc:  # noqa: BLE001 - one clear line for the user
        console.print(f"[red]tripwire up failed: {exc}[/red]")
        return 1
    finally:
        console.print("stopping …")
        if feeder is not None:
            feeder.stop_event.set()
            feeder.join(timeout=10)
        stack.stop(worker_timeout=15)
        console.print("stopped.")
