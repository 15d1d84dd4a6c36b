"""The ``tripwire`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from streams import __version__
from streams.cli.errors import load_cli_policy, policy_origin
from streams.cli.options import BROKER_HELP, cli_settings, emit_json, json_option, kafka_security, setting_option
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
    from streams.cli.errors import warn_unknown_env

    warn_unknown_env()  # misspelt TRIPWIRE_* variables, with a did-you-mean (once per process)


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
@click.option("--config", type=click.Path(dir_okay=False),
              help="YAML config file.")
def up(broker_port: int, web_port: int | None, traffic_file: Path | None, no_traffic: bool, rate: float,
       first_bad_after: float, data_dir: Path | None, partitions: int, config: str | None) -> None:
    """Embedded default: local broker + worker + synthetic agent traffic. Ctrl-C stops all."""
    from streams.ops.up import run_up

    settings = cli_settings(config=config, web_port=web_port, data_dir=data_dir, partitions=partitions)
    load_cli_policy(settings.policy_file, policy_origin(settings, False, config))  # before anything starts
    from streams.cli.errors import ConfigProblem
    from streams.ops.up import PortBusy, check_ports

    try:
        check_ports(settings, broker_port)
    except PortBusy as exc:
        raise ConfigProblem(str(exc)) from None
    sys.exit(run_up(settings, broker_port, traffic=not no_traffic, traffic_file=traffic_file, rate=rate,
                    first_bad_after_s=first_bad_after, config=config))


@main.command()
@setting_option("--broker", setting="broker", help=BROKER_HELP)
@setting_option("--web-host", setting="web_host", help="Bind address of the HTTP server.")
@setting_option("--web-port", setting="web_port", type=int, help="HTTP port.")
@setting_option("--data-dir", setting="data_dir", type=click.Path(file_okay=False, path_type=Path),
                help="Local table state.")
@setting_option("--policy", "policy_file", setting="policy_file",
                type=click.Path(dir_okay=False, path_type=Path), help="Risk-budget policy YAML.")
@setting_option("--partitions", setting="partitions", type=int, help="Partitions for topics tripwire creates.")
@click.option("--no-create-topics", is_flag=True, help="Do not create missing topics (managed clusters).")
@setting_option("--log-level", setting="log_level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--config", type=click.Path(dir_okay=False),
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
    from_flag = click.get_current_context().get_parameter_source("policy_file") == ParameterSource.COMMANDLINE
    load_cli_policy(settings.policy_file, policy_origin(settings, from_flag, config))
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


#: refused events listed one per line before the summary (the JSON report has up to MAX_PROBLEMS)
SHOW_PROBLEMS = 20


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@setting_option("--broker", setting="broker", help=BROKER_HELP)
@setting_option("--topic", setting="topics.traces", help="The trace topic.")
@click.option("--rebase-time", is_flag=True, help="Shift timestamps to now (as fast as possible: the newest event "
              "happens now; with --speed: the first, paced).")
@click.option("--speed", default=0.0, show_default=True,
              help="Time compression with pacing (60 = an hour in a minute); 0 = as fast as possible.")
@click.option("--batch", default=1, show_default=True, help="Group up to N consecutive events of an agent per message.")
@click.option("--limit", type=int, help="Send at most N lines.")
@click.option("--skip-invalid", is_flag=True, help="Send the events the worker accepts and skip the ones it would "
              "dead-letter (without it, any such event refuses the whole file: nothing is sent, exit 1).")
@click.option("--send-invalid", is_flag=True, help="Send the events the worker would dead-letter too (to exercise "
              "the dead-letter path; see `tripwire dlq`).")
@json_option()
def replay(file: Path, broker: str | None, topic: str | None, rebase_time: bool, speed: float, batch: int,
           limit: int | None, skip_invalid: bool, send_invalid: bool, json_out: str | None) -> None:
    """Send the trace events of a JSONL FILE to the trace topic.

    Every line is first judged by the worker's own decoder and schema (and its ts_future rule):
    if the worker would dead-letter any event, nothing is sent and each one is listed (exit 1),
    unless --skip-invalid or --send-invalid says what to do with them.
    """
    from streams.cli.options import printable
    from streams.ops.replay import replay_file, validate_file

    if skip_invalid and send_invalid:
        raise click.UsageError("--skip-invalid and --send-invalid exclude each other")
    settings = cli_settings(broker=broker, topics={"traces": topic} if topic else None)
    topic = settings.topics.traces
    check = validate_file(file, max_bytes=settings.max_message_bytes, limit=limit, rebase=rebase_time,
                          max_future_skew_s=settings.max_future_skew_s)
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(check.by_reason.items()))
    if not check.ok and not (skip_invalid or send_invalid):
        for problem in check.problems[:SHOW_PROBLEMS]:
            click.echo(f"{file}:{printable(str(problem))}", err=True)
        if len(check.problems) > SHOW_PROBLEMS:
            click.echo(f"… and {check.refused_events - SHOW_PROBLEMS} more", err=True)
        if json_out is not None:
            emit_json({"file": str(file), "sent": False, "validation": check.to_dict()}, json_out)
        click.echo(f"refused: the worker would dead-letter {check.refused_events} of "
                   f"{check.events + check.refused_events} events, on {check.refused_lines} of {check.lines} lines "
                   f"({reasons}); nothing sent. Fix the file, or pass --skip-invalid to send the other "
                   f"{check.events} (--send-invalid sends them all)", err=True)
        sys.exit(1)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from streams.kafka.producer import BrokerUnreachable, TraceProducer

    try:
        producer = TraceProducer(settings.bootstrap, topic, security=kafka_security(settings))
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    to_stdout = json_out == "-"
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False, disable=to_stdout) as progress:
        task = progress.add_task(f"replaying {file.name}", total=check.lines)
        stats = replay_file(file, producer, rebase=rebase_time, speed=speed, batch=max(1, batch), limit=limit,
                            invalid="send" if send_invalid else "skip", validation=check,
                            max_bytes=settings.max_message_bytes, max_future_skew_s=settings.max_future_skew_s,
                            on_progress=lambda n: progress.update(task, completed=n))
    producer.close()
    if json_out is not None:
        emit_json({"file": str(file), "sent": True, "topic": topic, **stats.to_dict()}, json_out)
    if to_stdout:
        return
    line = f"sent {stats.events} events in {stats.messages} messages to {topic} in {stats.seconds:.1f}s"
    if stats.skipped:
        line += f"; skipped {stats.skipped} the worker would dead-letter ({reasons})"
    if stats.sent_invalid:
        line += f"; {check.refused_events} of them the worker will dead-letter ({reasons}; see `tripwire dlq`)"
    if check.duplicates:
        line += f"; {check.duplicates} repeat an earlier event_id (the worker counts them once)"
    click.echo(line)


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
@json_option()
def policy_check(file: Path, json_out: str | None) -> None:
    """Validate a policy FILE; errors name their location (path and line:column)."""
    from breakers.policy import check_policy_text, load_policy

    errors = check_policy_text(file.read_text(encoding="utf-8"), str(file))
    if json_out is not None:
        emit_json({"file": str(file), "ok": not errors, "errors": [e.to_dict() for e in errors]}, json_out)
    if errors and json_out != "-":
        for err in errors:
            click.echo(str(err), err=True)
    if errors:
        sys.exit(1)
    if json_out != "-":
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
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML config file.")
@json_option()
def config_show(config_file: str | None, json_out: str | None) -> None:
    """Print the effective settings (flags aside) with secrets redacted, as YAML (or JSON)."""
    import yaml

    settings = cli_settings(config=config_file)
    data = {name: getattr(settings, name) for name in type(settings).model_fields}
    dumped = _redact(json.loads(settings.model_dump_json()))
    for name, value in data.items():
        if name == "signing_keys":
            dumped[name] = {k: "**********" for k in value}
    if json_out is not None:
        emit_json(dumped, json_out)
        if json_out == "-":
            return
    click.echo(yaml.safe_dump(dumped, sort_keys=False))


@main.group()
def token() -> None:
    """Operator bearer tokens (stored hashed in the config)."""


@token.command("new")
@click.option("--name", required=True, help="Who holds the token (shows in the audit log).")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True)
@json_option("JSON ({token, entry}) to FILE (created 0600: it holds the token), or to stdout when no FILE is given.")
def token_new(name: str, role: str, json_out: str | None) -> None:
    """Generate a token; prints it once and the config entry with its hash."""
    from breakers.operators import generate_token, hash_token

    secret = generate_token()
    if json_out is not None:
        doc = {"token": secret, "entry": {"name": name, "role": role, "token_sha256": hash_token(secret)}}
        if json_out == "-":
            emit_json(doc, json_out)
            return
        import os

        fd = os.open(json_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, indent=2) + "\n")
        click.echo(f"token and config entry written to {json_out} (mode 0600); the token is not stored anywhere else")
        return
    click.echo(f"token (give it to {name}; it is not stored anywhere): {secret}")
    click.echo("config entry (operators:):")
    click.echo(json.dumps({"name": name, "role": role, "token_sha256": hash_token(secret)}))
