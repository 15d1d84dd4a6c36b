"""``tripwire breakers …`` and ``tripwire incidents …``: operator commands.

``breakers`` is an HTTP client of a worker's API (``--api``, env ``TRIPWIRE_API``, default
http://127.0.0.1:6066). The bearer token comes from ``--token``, env ``TRIPWIRE_TOKEN`` or
``<data dir>/admin.token`` (written by ``tripwire up``; the data dir is ``--data-dir``, else the
``data_dir`` setting: ``TRIPWIRE_DATA_DIR`` or the config file, else ``.tripwire``); it is sent,
never printed. Group options are accepted after the subcommand too (``breakers list --api URL``),
and every command that prints data takes ``--json [FILE]``. Tables fold long ids, never cut them.
``incidents`` reads the ``breaker-events`` audit topic from the beginning and rebuilds the
incidents (``streams.ops.incidents``).

Every error (API unreachable, 401/403/409/…) is one clear line on stderr and exit status 1.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import click

from breakers.state_machine import STATES
from detectors.durations import format_age
from streams.cli.options import DEFAULT_API, console, emit_json, json_option, printable, shared_option
from streams.settings import DEFAULTS

TOKEN_FILE = DEFAULTS.data_dir / "admin.token"
#: the least role each command needs (mirrors breakers.operators.PERMISSIONS), for 403 messages
NEEDED_ROLE = {"list": "viewer", "show": "viewer", "force-open": "operator", "reset": "operator",
               "approve": "operator"}
_STATE_STYLE = {"closed": "green", "shadow": "cyan", "escalated": "yellow", "half_open": "magenta",
                "open": "red", "forced_open": "bold red"}


# ------------------------------------------------------------------ helpers
def find_token(explicit: str | None, token_file: Path = TOKEN_FILE) -> str | None:
    """``--token`` > env ``TRIPWIRE_TOKEN`` > ``.tripwire/admin.token`` > none."""
    if explicit and explicit.strip():
        return explicit.strip()
    env = os.environ.get("TRIPWIRE_TOKEN", "").strip()
    if env:
        return env
    try:
        text = token_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


class ApiClient:
    """Thin httpx wrapper that turns every failure into a clear ClickException."""

    def __init__(self, base: str, token: str | None, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, what: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> dict[str, Any]:
        import httpx  # lazy: ~0.1-0.7 s of import that commands without the API (backtest, policy) never pay

        url = f"{self.base}{path}"
        try:
            r = httpx.request(method, url, headers=self._headers(), json=body, params=params, timeout=self.timeout)
        except httpx.TransportError as exc:
            _fail(f"cannot reach the tripwire API at {self.base} ({type(exc).__name__}: {exc}); "
                  "is a worker running? (set --api or TRIPWIRE_API)")
        try:
            doc = r.json()
        except ValueError:
            doc = {"error": r.text[:300]}
        if r.status_code == 200:
            return doc if isinstance(doc, dict) else {"result": doc}
        err = doc.get("error", r.text[:300]) if isinstance(doc, dict) else r.text[:300]
        if r.status_code == 401:
            hint = "no token given" if not self.token else "the token was not accepted"
            _fail(f"401 unauthorized: {hint}; `{what}` needs a bearer token with role {NEEDED_ROLE[what]} or "
                  "higher (--token, TRIPWIRE_TOKEN or .tripwire/admin.token)")
        if r.status_code == 403:
            _fail(f"403 forbidden: `{what}` needs role {NEEDED_ROLE[what]} or higher ({err})")
        if r.status_code == 409:
            state = doc.get("state") if isinstance(doc, dict) else None
            _fail(f"409 conflict: {err}" + (f" (current state: {state})" if state else ""))
        _fail(f"{r.status_code} from {url}: {err}")


def token_file_of(data_dir: Path | None) -> Path:
    """``admin.token`` in ``data_dir``, else in the ``data_dir`` setting (``TRIPWIRE_DATA_DIR``, config file)."""
    if data_dir is None:
        from streams.cli.options import cli_settings

        data_dir = Path(cli_settings().data_dir)
    return Path(data_dir) / "admin.token"


def _client(ctx: click.Context) -> ApiClient:
    obj = ctx.obj
    return ApiClient(obj["api"], find_token(obj.get("token"), token_file_of(obj.get("data_dir"))))


def scope_path(scope: str, action: str | None = None) -> str:
    """``/v1/breakers/<scope>[/<action>]`` with the scope percent-encoded (slashes too)."""
    if not scope.strip():
        _fail("scope must not be empty (e.g. agent:my-agent or agent:a/tool:shell)")
    path = f"/v1/breakers/{quote(scope, safe='')}"
    return f"{path}/{action}" if action else path


def _iso(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(float(ts), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _short_time(ts: float | None) -> str:
    """``MM-DD HH:MM:SS`` in UTC (the JSON output has the full timestamp)."""
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(float(ts), _dt.timezone.utc).strftime("%m-%d %H:%M:%S")


def _age(seconds: float | None) -> str:
    """Compact age (45s, 12m, 3h05m, 2d4h); ``-`` when unknown."""
    return "-" if seconds is None else format_age(seconds)


def key_evidence(evidence: dict[str, Any]) -> str:
    """A one-line digest of a breaker's evidence (the same digest /metrics and the dashboards show)."""
    from streams.engine.readouts import evidence_digest

    return evidence_digest(evidence)


def _console() -> Any:
    return console()


def _echo_json(doc: Any, target: str | None = "-") -> None:
    emit_json(doc, target)


def _state_text(state: str) -> str:
    style = _STATE_STYLE.get(state, "white")
    return f"[{style}]{state}[/{style}]"


def breakers_table(doc: dict[str, Any]) -> Any:
    """The ``breakers list`` table of a ``GET /v1/breakers`` answer: every cell folds, none is cut."""
    from rich.table import Table

    items = doc.get("breakers", [])
    # expand + ratios: rich gives the terminal's width to the folding columns (min widths would crop the table)
    table = Table(title=f"tripwire breakers ({len(items)}; policy {doc.get('policy_version', '?')})", expand=True)
    table.add_column("scope", overflow="fold", ratio=3)
    table.add_column("state", no_wrap=True)
    table.add_column("since (UTC)", no_wrap=True)
    table.add_column("age", no_wrap=True)
    table.add_column("budget", overflow="fold", ratio=1)
    table.add_column("reason", overflow="fold", ratio=3)
    table.add_column("key evidence", overflow="fold", ratio=2)
    for b in items:
        table.add_row(printable(b["scope"]), _state_text(b["state"]), _short_time(b.get("since")), _age(b.get("age_s")),
                      printable(b.get("budget") or "-"), printable(b.get("reason") or ""),
                      key_evidence(b.get("evidence") or {}))
    return table


def incidents_table(rows: list[dict[str, Any]], topic: str) -> Any:
    """The ``incidents list`` table: ids and scopes fold, never cut."""
    from rich.table import Table

    table = Table(title=f"incidents in {topic} ({len(rows)})", expand=True)
    table.add_column("id", overflow="fold", ratio=2)
    table.add_column("scope", overflow="fold", ratio=3)
    table.add_column("opened (UTC)", no_wrap=True)
    table.add_column("state", overflow="fold", ratio=1)
    table.add_column("trigger", overflow="fold", ratio=4)
    for r in rows:
        state = r["state"] if r["state"] == "resolved" else f"open ({r['now']})"
        table.add_row(r["id"], printable(r["scope"]), _short_time(r["opened_at"]), state, printable(r["trigger"]))
    return table


# ------------------------------------------------------------------ breakers
def api_options(group: bool) -> Any:
    """``--api``, ``--token`` and ``--data-dir`` (where ``admin.token`` is looked for), on the group and
    on each subcommand (:func:`streams.cli.options.shared_option`)."""

    def deco(f: Any) -> Any:
        f = shared_option("--data-dir", group=group, type=click.Path(file_okay=False, path_type=Path),
                          help="Data directory of `tripwire up` holding admin.token (else the data_dir setting, "
                          "TRIPWIRE_DATA_DIR).")(f)
        f = shared_option("--token", group=group, default=None, help="Operator bearer token (else env "
                          "TRIPWIRE_TOKEN, else admin.token in the data directory, written by `tripwire up`).")(f)
        return shared_option("--api", group=group, envvar="TRIPWIRE_API", show_envvar=True, default=DEFAULT_API,
                             show_default=True, help="Worker API base URL.")(f)

    return deco


@click.group()
@api_options(group=True)
def breakers() -> None:
    """Show breakers and act on them (force-open, reset, approve) through the worker API."""


@breakers.command("list")
@click.option("--state", type=click.Choice(STATES),
              help="Only breakers in this state.")
@json_option()
@api_options(group=False)
@click.pass_context
def breakers_list(ctx: click.Context, state: str | None, json_out: str | None) -> None:
    """Every recorded breaker (enforcing ones first)."""
    doc = _client(ctx).request("GET", "/v1/breakers", "list", params={"state": state} if state else None)
    if json_out is not None:
        _echo_json(doc, json_out)
        if json_out == "-":
            return
    console = _console()
    console.print(breakers_table(doc))
    if not doc.get("known", True):
        console.print("[yellow]warning: the worker has not finished reading breaker-state yet[/yellow]")


@breakers.command("show")
@click.argument("scope")
@json_option()
@api_options(group=False)
@click.pass_context
def breakers_show(ctx: click.Context, scope: str, json_out: str | None) -> None:
    """One breaker: state, reason, evidence and the latest verdict of each budget."""
    doc = _client(ctx).request("GET", scope_path(scope), "show")
    if json_out is not None:
        _echo_json(doc, json_out)
        if json_out == "-":
            return
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{doc.get('scope', scope)}[/bold]  {_state_text(doc.get('state', '?'))}"
                  + ("" if doc.get("recorded", True) else "  (never recorded: closed)"))
    fields = Table(show_header=False, box=None)
    fields.add_column(style="dim")
    fields.add_column(overflow="fold")
    for label, value in (("since", _iso(doc.get("since"))), ("age", _age(doc.get("age_s"))),
                         ("reason", doc.get("reason") or "-"), ("budget", doc.get("budget") or "-"),
                         ("actor", doc.get("actor") or "-"), ("evidence", key_evidence(doc.get("evidence") or {})),
                         ("approvals", ", ".join(f"{a['actor']} until {_iso(a['expires_at'])}"
                                                 for a in doc.get("approvals") or []) or "-")):
        fields.add_row(label, str(value))
    console.print(fields)
    verdicts = doc.get("verdicts") or []
    if verdicts:
        table = Table(title="latest verdicts")
        for col in ("budget", "fired", "burn rates", "reason"):
            table.add_column(col, overflow="fold")
        for v in verdicts:
            burns = ", ".join(f"{w} {float(b):.1f}x" for w, b in (v.get("burn_rates") or {}).items()) or "-"
            table.add_row(v["budget"], "yes" if v.get("fired") else "no", burns, v.get("reason", ""))
        console.print(table)


def _act(ctx: click.Context, action: str, scope: str, reason: str, json_out: str | None, **extra: Any) -> None:
    doc = _client(ctx).request("POST", scope_path(scope, action), action, body={"reason": reason, **extra})
    if json_out is not None:
        _echo_json(doc, json_out)
        if json_out == "-":
            return
    b = doc.get("breaker", {})
    click.echo(f"{action} {b.get('scope', scope)}: now {b.get('state', '?')} (by {doc.get('actor', '?')}: {reason})")


_reason = click.option("--reason", required=True, help="Why (recorded in the breaker-events audit log).")
_json = json_option()


@breakers.command("force-open")
@click.argument("scope")
@_reason
@_json
@api_options(group=False)
@click.pass_context
def breakers_force_open(ctx: click.Context, scope: str, reason: str, json_out: str | None) -> None:
    """Kill switch: deny every call of SCOPE until an operator resets it."""
    _act(ctx, "force-open", scope, reason, json_out)


@breakers.command("reset")
@click.argument("scope")
@_reason
@_json
@api_options(group=False)
@click.pass_context
def breakers_reset(ctx: click.Context, scope: str, reason: str, json_out: str | None) -> None:
    """Close SCOPE now (clears back-off, probes and approvals)."""
    _act(ctx, "reset", scope, reason, json_out)


@breakers.command("approve")
@click.argument("scope")
@_reason
@click.option("--ttl", default=None, help="How long the approval lasts, e.g. 30m or 2h (default: policy's).")
@_json
@api_options(group=False)
@click.pass_context
def breakers_approve(ctx: click.Context, scope: str, reason: str, ttl: str | None, json_out: str | None) -> None:
    """Allow the consequential tools of an escalated SCOPE for a while."""
    extra: dict[str, Any] = {}
    if ttl is not None:
        from breakers.policy import parse_duration

        try:
            extra["ttl_s"] = parse_duration(ttl)
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(f"{ttl!r} is not a duration like 30m or 2h ({exc})", param_hint="--ttl")
    _act(ctx, "approve", scope, reason, json_out, **extra)


# ------------------------------------------------------------------ incidents
def kafka_options(topic_setting: str, topic_help: str) -> Any:
    """``--broker``, ``--topic`` and ``--timeout`` of a topic-reading group, accepted after its subcommands too."""

    def options(group: bool) -> Any:
        def deco(f: Any) -> Any:
            f = shared_option("--timeout", group=group, type=float, default=15.0, show_default=True,
                              help="Seconds to wait for the broker / topic.")(f)
            topic_kw: dict[str, Any] = {"setting": topic_setting} if group else {}
            f = shared_option("--topic", group=group, help=topic_help, **topic_kw)(f)
            broker_kw: dict[str, Any] = {"setting": "broker"} if group else {}
            return shared_option("--broker", group=group, help="Kafka bootstrap URL; TLS/SASL from "
                                 "TRIPWIRE_KAFKA__*.", **broker_kw)(f)

        return deco

    return options


incident_options = kafka_options("topics.breaker_events", "The audit topic.")


@click.group()
@incident_options(group=True)
def incidents() -> None:
    """Incidents rebuilt from the breaker-events audit log."""


def _load(ctx: click.Context) -> Any:
    """The incident log, read with the settings (flags > env > config file > defaults)."""
    from streams.cli.options import cli_settings, kafka_security
    from streams.ops.incidents import IncidentsReadError, load_incidents

    o = ctx.obj
    settings = cli_settings(broker=o["broker"], topics={"breaker_events": o["topic"]} if o["topic"] else None)
    o["topic"] = settings.topics.breaker_events
    try:
        return load_incidents(settings.bootstrap, o["topic"], o["timeout"], kafka_security(settings))
    except IncidentsReadError as exc:
        _fail(str(exc))


@incidents.command("list")
@click.option("--open", "only_open", is_flag=True, help="Unresolved incidents only.")
@_json
@incident_options(group=False)
@click.pass_context
def incidents_list(ctx: click.Context, only_open: bool, json_out: str | None) -> None:
    """Every incident: id, scope, opened, state, trigger."""
    from streams.ops.incidents import summary_row

    log = _load(ctx)
    rows = [summary_row(i) for i in log.incidents if not only_open or i.state == "open"]
    if json_out is not None:
        _echo_json({"incidents": rows, "records": log.records, "skipped": log.skipped}, json_out)
        if json_out == "-":
            return
    _console().print(incidents_table(rows, ctx.obj["topic"]))


@incidents.command("show")
@click.argument("ident", metavar="ID")
@click.option("--markdown", is_flag=True, help="Post-mortem skeleton in Markdown.")
@_json
@incident_options(group=False)
@click.pass_context
def incidents_show(ctx: click.Context, ident: str, markdown: bool, json_out: str | None) -> None:
    """One incident: trigger, evidence, timeline, operator actions, resolution."""
    inc = _load(ctx).find(ident)
    if inc is None:
        _fail(f"no incident {ident!r} in {ctx.obj['topic']} (see `tripwire incidents list`)")
    if json_out is not None:
        _echo_json(inc.to_dict(), json_out)
        if json_out == "-":
            return
    if markdown:
        click.echo(inc.to_markdown(), nl=False)
    else:
        from rich.markdown import Markdown

        _console().print(Markdown(inc.to_markdown()))


COMMANDS: list[click.Command] = [breakers, incidents]
