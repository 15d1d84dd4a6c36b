"""The ``tripwire`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from streams import __version__
from streams.cli.options import BROKER_HELP, cli_settings, kafka_security, setting_option
from streams.ops.devstack import DEV_PARTITIONS
from streams.ops.traffic import DEFAULT_FIRST_BAD_AFTER_S, DEFAULT_RATE, DEFAULT_SEED
from streams.settings import DEFAULTS


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tripwire")
def main() -> None:
    """tripwire: monitoring and circuit breakers for AI agents in production.

    Start here: `tripwire up` runs everything locally (embedded broker, worker,
    synthetic agents). Production workers run `tripwire worker --broker kafka://…`.
    """


@main.command()
@click.option("--broker-port", default=int(DEFAULTS.bootstrap.rsplit(":", 1)[1]), show_default=True,
              help="Loopback port of the embedded broker.")
@setting_option("--web-port", setting="web_port", type=int, help="Worker HTTP port (metrics, API).")
@click.option("--traffic", "traffic_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Loop this JSONL trace file (time-rebased, 60x) instead of synthetic agents.")
@click.option("--no-traffic", is_flag=True, help="Start broker and worker only.")
@click.option("--rate", default=DEFAULT_RATE, show_default=True, help="Synthetic events per second.")
@click.option("--first-bad-after", default=DEFAULT_FIRST_BAD_AFTER_S, show_default=True,
              help="Seconds of synthetic traffic before the first agent goes bad.")
@setting_option("--data-dir", setting="data_dir", type=click.Path(file_okay=False, path_type=Path),
                help="Broker log, worker log and state.")
@click.option("--partitions", default=DEV_PARTITIONS, show_default=True, help="Partitions of each topic.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="YAML config file.")
def up(broker_port: int, web_port: int | None, traffic_file: Path | None, no_traffic: bool, rate: float,
       first_bad_after: float, data_dir: Path | None, partitions: int, config: str | None) -> None:
    """Embedded default: local broker + worker + synthetic agent traffic. Ctrl-C stops all."""
    from streams.ops.up import run_up

    settings = cli_settings(config=config, web_port=web_port, data_dir=data_dir, partitions=partitions)
    sys.exit(run_up(settings, broker_port, traffic=not no_traffic, traffic_file=traffic_file, rate=rate,
                    first_bad_after_s=first_bad_after, config=config))


@main.command()
@setting_option("--broker", setting="broker", help=BROKER_HELP)
@setting_option("--web-host", setting="web_host", help="Bind address of the HTTP server.")
@setting_option("--web-port", setting="web_port", type=int, help="HTTP port.")
@setting_option("--data-dir", setting="data_dir", type=click.Path(file_okay=False, path_type=Path),
                help="Local table state.")
@setting_option("--policy", "policy_file", setting="policy_file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Risk-budget policy YAML.")
@setting_option("--partitions", setting="partitions", type=int, help="Partitions for topics tripwire creates.")
@click.option("--no-create-topics", is_flag=True, help="Do not create missing topics (managed clusters).")
@setting_option("--log-level", setting="log_level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="YAML config file.")
def worker(broker: str | None, web_host: str | None, web_port: int | None, data_dir: Path | None,
           policy_file: Path | None, partitions: int | None, no_create_topics: bool,
           log_level: str | None, config: str | None) -> None:
    """A production worker: consume traces, run detectors and breakers, serve the API."""
    from kafka.errors import KafkaError

    from streams.kafka.security import KafkaSecurityError
    from streams.worker.run import run_worker

    settings = cli_settings(config=config, broker=broker, web_host=web_host, web_port=web_port, data_dir=data_dir,
                         policy_file=policy_file, partitions=partitions, log_level=log_level)
    try:
        settings.kafka.ssl_context  # noqa: B018 - load the CA and client certificate once, up front
    except KafkaSecurityError as exc:
        raise click.ClickException(f"Kafka TLS: {exc}") from None
    from streams.kafka.producer import BrokerUnreachable, check_broker

    try:  # say precisely why the broker cannot be used (TCP, TLS, SASL offer) instead of retrying blindly
        check_broker(settings.bootstrap, settings.kafka)
    except BrokerUnreachable as exc:
        if not no_create_topics:  # the worker needs the broker now to create its topics
            raise click.ClickException(str(exc)) from None
        click.echo(f"warning: {exc}; starting anyway, the worker retries until it can connect", err=True)
    try:
        run_worker(settings, create_topics=not no_create_topics)
    except KafkaError as exc:
        from streams.kafka.producer import connect_error

        raise click.ClickException(connect_error(settings.bootstrap, settings.kafka, exc)) from None


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@setting_option("--broker", setting="broker", help=BROKER_HELP)
@setting_option("--topic", setting="topics.traces", help="The trace topic.")
@click.option("--rebase-time", is_flag=True, help="Shift timestamps so the first event happens now.")
@click.option("--speed", default=0.0, show_default=True,
              help="Time compression with pacing (60 = an hour in a minute); 0 = as fast as possible.")
@click.option("--batch", default=1, show_default=True, help="Group up to N consecutive events of an agent per message.")
@click.option("--limit", type=int, help="Send at most N lines.")
def replay(file: Path, broker: str | None, topic: str | None, rebase_time: bool, speed: float, batch: int,
           limit: int | None) -> None:
    """Send the trace events of a JSONL FILE to the trace topic."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from streams.kafka.producer import BrokerUnreachable, TraceProducer
    from streams.ops.replay import replay_file

    settings = cli_settings(broker=broker, topics={"traces": topic} if topic else None)
    topic = settings.topics.traces
    total = sum(1 for line in file.open("rb") if line.strip())
    if limit is not None:
        total = min(total, limit)
    try:
        producer = TraceProducer(settings.bootstrap, topic, security=kafka_security(settings))
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as progress:
        task = progress.add_task(f"replaying {file.name}", total=total)
        stats = replay_file(file, producer, rebase=rebase_time, speed=speed, batch=max(1, batch), limit=limit,
                            on_progress=lambda n: progress.update(task, completed=n))
    producer.close()
    click.echo(f"sent {stats.events} events ({stats.raw} unparseable lines) in {stats.messages} messages "
               f"to {topic} in {stats.seconds:.1f}s")


@main.command()
@setting_option("--broker", setting="broker", help=BROKER_HELP)
@setting_option("--topic", setting="topics.traces", help="The trace topic.")
@click.option("--rate", default=DEFAULT_RATE, show_default=True, help="Events per second.")
@click.option("--duration", default=0.0, show_default=True, help="Seconds to run; 0 = until Ctrl-C.")
@click.option("--seed", default=DEFAULT_SEED, show_default=True)
def traffic(broker: str | None, topic: str | None, rate: float, duration: float, seed: int) -> None:
    """Send synthetic agent traffic (a dozen agents, one going bad now and then) to the trace topic."""
    import time

    from streams.kafka.producer import BrokerUnreachable, TraceProducer
    from streams.ops.traffic import SyntheticTraffic

    settings = cli_settings(broker=broker, topics={"traces": topic} if topic else None)
    try:
        producer = TraceProducer(settings.bootstrap, settings.topics.traces, security=kafka_security(settings))
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    gen = SyntheticTraffic(seed=seed, rate=rate)
    start = last = time.time()
    try:
        while duration <= 0 or time.time() - start < duration:
            time.sleep(0.25)
            now = time.time()
            producer.send_grouped(gen.tick(now, now - last))
            last = now
    except KeyboardInterrupt:
        pass
    finally:
        producer.close()
    click.echo(f"sent {producer.sent_events} events in {producer.sent_messages} messages to {settings.topics.traces}")


@main.group()
def policy() -> None:
    """Risk-budget policy files."""


@policy.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def policy_check(file: Path, as_json: bool) -> None:
    """Validate a policy FILE; errors name their location (path and line:column)."""
    from breakers.policy import check_policy_text, load_policy

    errors = check_policy_text(file.read_text(encoding="utf-8"), str(file))
    if as_json:
        click.echo(json.dumps({"file": str(file), "ok": not errors, "errors": [e.to_dict() for e in errors]}, indent=2))
    elif errors:
        for err in errors:
            click.echo(str(err), err=True)
    if errors:
        sys.exit(1)
    if not as_json:
        pol = load_policy(file)
        click.echo(f"{file}: OK (version {pol.policy_version}, {len(pol.budgets)} budgets)")


@main.group()
def config() -> None:
    """Effective configuration."""


_SECRET_WORDS = ("secret", "password", "token", "private", "key_pem")


def _redact(value: Any, key: str = "") -> Any:
    """Mask secret values (SecretStr, and fields whose name says secret) for display."""
    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if isinstance(value, str) and any(w in key.lower() for w in _SECRET_WORDS) and "sha256" not in key.lower():
        return "**********"
    return value


@config.command("show")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML config file.")
def config_show(config_file: str | None) -> None:
    """Print the effective settings (flags aside) with secrets redacted, as YAML."""
    import yaml

    settings = cli_settings(config=config_file)
    data = {name: getattr(settings, name) for name in type(settings).model_fields}
    dumped = _redact(json.loads(settings.model_dump_json()))
    for name, value in data.items():
        if name == "signing_keys":
            dumped[name] = {k: "**********" for k in value}
    click.echo(yaml.safe_dump(dumped, sort_keys=False))


@main.group()
def token() -> None:
    """Operator bearer tokens (stored hashed in the config)."""


@token.command("new")
@click.option("--name", required=True, help="Who holds the token (shows in the audit log).")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True)
def token_new(name: str, role: str) -> None:
    """Generate a token; prints it once and the config entry with its hash."""
    from breakers.operators import generate_token, hash_token

    secret = generate_token()
    click.echo(f"token (give it to {name}; it is not stored anywhere): {secret}")
    click.echo("config entry (operators:):")
    click.echo(json.dumps({"name": name, "role": role, "token_sha256": hash_token(secret)}))
