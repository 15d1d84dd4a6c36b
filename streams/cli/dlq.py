"""``tripwire dlq …``: read the dead-letter topic ``agent-traces-dlq`` (``streams.ops.dlq``).

``tail`` shows the newest records, ``sample`` up to N records per reason, ``count`` the records
per reason. The original bytes are shown as text only when valid, printable UTF-8, else base64;
every attacker-controlled string (detail, key, payload) is escaped for the terminal. Errors
(broker unreachable, no such topic) are one line, exit 1.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import click

from streams.cli.breakers import kafka_options
from streams.cli.options import console, emit_json, json_option, printable

dlq_options = kafka_options("topics.dlq", "The dead-letter topic.")


def _read(ctx: click.Context, last: int | None) -> list[Any]:
    from streams.cli.options import cli_settings, kafka_security
    from streams.ops.dlq import DlqReadError, read_dlq

    o = ctx.obj
    settings = cli_settings(broker=o.get("broker"), topics={"dlq": o["topic"]} if o.get("topic") else None)
    o["topic"] = settings.topics.dlq
    try:
        return read_dlq(settings.bootstrap, o["topic"], last=last, timeout_s=o.get("timeout") or 15.0,
                        security=kafka_security(settings))
    except DlqReadError as exc:
        raise click.ClickException(str(exc)) from None


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(float(ts), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _payload_text(rec: Any) -> str:
    p = rec.payload or {}
    shown = p.get("text") if p.get("encoding") == "utf-8" else f"base64:{p.get('base64') or ''}"
    more = " …(truncated)" if rec.payload_truncated else ""
    return printable(shown or "") + more


def _show(records: list[Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("rejected", no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_column("source", overflow="fold")
    table.add_column("key", overflow="fold")
    table.add_column("detail", overflow="fold")
    table.add_column("original bytes", overflow="fold")
    for r in records:
        src = r.source or {}
        where = f"{src.get('topic', '?')}/{src.get('partition', '?')}@{src.get('offset', '?')}"
        if src.get("index") is not None:
            where += f"[{src['index']}]"
        key = r.key.get("text") if r.key.get("encoding") == "utf-8" else (f"base64:{r.key['base64']}"
                                                                          if r.key.get("base64") else "-")
        table.add_row(_when(r.rejected_at), printable(r.reason), printable(where), printable(key or "-"),
                      printable(r.detail), _payload_text(r))
    console().print(table)


@click.group()
@dlq_options(group=True)
def dlq() -> None:
    """Dead-lettered input (agent-traces-dlq): newest records, samples per reason, counts per reason."""


@dlq.command("tail")
@click.option("-n", "--last", default=20, show_default=True, help="How many of the newest records.")
@json_option()
@dlq_options(group=False)
@click.pass_context
def dlq_tail(ctx: click.Context, last: int, json_out: str | None) -> None:
    """The newest records with reason, source offset, detail and the original bytes."""
    records = _read(ctx, max(0, last))
    if json_out is not None:
        emit_json({"topic": ctx.obj["topic"], "records": [r.to_dict() for r in records]}, json_out)
        if json_out == "-":
            return
    _show(records, f"{ctx.obj['topic']}: newest {len(records)}")


@dlq.command("sample")
@click.option("-n", "--per-reason", default=3, show_default=True, help="Records per reason.")
@click.option("--reason", "reasons", multiple=True, help="Only this reason (repeatable).")
@click.option("--seed", type=int, help="Pick the same records again.")
@json_option()
@dlq_options(group=False)
@click.pass_context
def dlq_sample(ctx: click.Context, per_reason: int, reasons: tuple[str, ...], seed: int | None,
               json_out: str | None) -> None:
    """Up to N records of each reason, at random (to find the producer behind each)."""
    from streams.ops.dlq import sample

    records = [r for r in _read(ctx, None) if not reasons or r.reason in reasons]
    picked = sample(records, max(1, per_reason), seed=seed)
    if json_out is not None:
        emit_json({"topic": ctx.obj["topic"], "records": [r.to_dict() for r in picked]}, json_out)
        if json_out == "-":
            return
    _show(picked, f"{ctx.obj['topic']}: {len(picked)} sampled of {len(records)}")


@dlq.command("count")
@json_option()
@dlq_options(group=False)
@click.pass_context
def dlq_count(ctx: click.Context, json_out: str | None) -> None:
    """Records per reason (the topic's whole retained content)."""
    from rich.table import Table

    from streams.ops.dlq import counts

    records = _read(ctx, None)
    by_reason = counts(records)
    if json_out is not None:
        emit_json({"topic": ctx.obj["topic"], "records": len(records), "by_reason": by_reason}, json_out)
        if json_out == "-":
            return
    table = Table(title=f"{ctx.obj['topic']}: {len(records)} records")
    table.add_column("reason", overflow="fold")
    table.add_column("records", justify="right")
    table.add_column("newest", no_wrap=True)
    newest: dict[str, float] = {}
    for r in records:
        newest[r.reason] = max(newest.get(r.reason, 0.0), r.rejected_at or 0.0)
    for reason, n in by_reason.items():
        table.add_row(printable(reason), str(n), _when(newest.get(reason)))
    console().print(table)


COMMANDS = [dlq]
