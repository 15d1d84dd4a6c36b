"""``tripwire breakers …`` and ``tripwire incidents …``: operator commands.

``breakers`` is an HTTP client of a worker's API (``--api``, env ``TRIPWIRE_API``, default
http://127.0.0.1:6066). The bearer token comes from ``--token``, env ``TRIPWIRE_TOKEN`` or
``.tripwire/admin.token`` (written by ``tripwire up``); it is sent, never printed.
``incidents`` reads the ``breaker-events`` audit topic from the beginning and rebuilds the
incidents (``streams.ops.incidents``).

Every error (API unreachable, 401/403/409/…) is one clear line on stderr and exit status 1.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import click
import httpx

from breakers.state_machine import STATES
from streams.cli.options import DEFAULT_API, setting_option
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


def _client(ctx: click.Context) -> ApiClient:
    obj = ctx.obj
    return ApiClient(obj["api"], find_token(obj["token"]))


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


def _age(seconds: float | None) -> str:
    """Compact age: 45s, 12m, 3h05m, 2d4h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def key_evidence(evidence: dict[str, Any]) -> str:
    """A one-line digest of a breaker's evidence: burn rates and the counts of the longest window."""
    parts: list[str] = []
    burns = evidence.get("burn_rates") or {}
    if burns:
        parts.append("burn " + ", ".join(f"{w} {float(b):.1f}x" for w, b in burns.items()))
    counts = evidence.get("counts") or {}
    if counts:
        window, c = list(counts.items())[-1]
        bits = [f"{k.replace('_', ' ')} {float(c[k]):g}" for k in
                ("tool_calls", "near_misses", "incidents_critical", "errors") if float(c.get(k) or 0)]
        if bits:
            parts.append(f"{window}: " + ", ".join(bits))
    if "previous" in evidence:
        parts.append(f"was {evidence['previous']}")
    return "; ".join(parts) or "-"


def _console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=False, width=max(100, int(os.environ.get("COLUMNS", "0") or 0)))


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


def _state_text(state: str) -> str:
    style = _STATE_STYLE.get(state, "white")
    return f"[{style}]{state}[/{style}]"


# ------------------------------------------------------------------ breakers
@click.group()
@click.option("--api", envvar="TRIPWIRE_API", show_envvar=True, default=DEFAULT_API, show_default=True,
              help="Worker API base URL.")
@click.option("--token", default=None, help="Operator bearer token (else env TRIPWIRE_TOKEN, else "
              ".tripwire/admin.token written by `tripwire up`).")
@click.pass_context
def breakers(ctx: click.Context, api: str, token: str | None) -> None:
    """Show breakers and act on them (force-open, reset, approve) through the worker API."""
    ctx.obj = {"api": api, "token": token}


@breakers.command("list")
@click.option("--state", type=click.Choice(STATES),
              help="Only breakers in this state.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def breakers_list(ctx: click.Context, state: str | None, as_json: bool) -> None:
    """Every recorded breaker (enforcing ones first)."""
    doc = _client(ctx).request("GET", "/v1/breakers", "list", params={"state": state} if state else None)
    if as_json:
        _echo_json(doc)
        return
    from rich.table import Table

    items = doc.get("breakers", [])
    table = Table(title=f"tripwire breakers ({len(items)}; policy {doc.get('policy_version', '?')})")
    for col in ("scope", "state", "since", "age", "budget"):
        table.add_column(col, no_wrap=True)
    for col in ("reason", "key evidence"):
        table.add_column(col, overflow="fold")
    for b in items:
        table.add_row(b["scope"], _state_text(b["state"]), _iso(b.get("since")), _age(b.get("age_s")),
                      b.get("budget") or "-", (b.get("reason") or "")[:160], key_evidence(b.get("evidence") or {}))
    console = _console()
    console.print(table)
    if not doc.get("known", True):
        console.print("[yellow]warning: the worker has not finished reading breaker-state yet[/yellow]")


@breakers.command("show")
@click.argument("scope")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def breakers_show(ctx: click.Context, scope: str, as_json: bool) -> None:
    """One breaker: state, reason, evidence and the latest verdict of each budget."""
    doc = _client(ctx).request("GET", scope_path(scope), "show")
    if as_json:
        _echo_json(doc)
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


def _act(ctx: click.Context, action: str, scope: str, reason: str, as_json: bool, **extra: Any) -> None:
    doc = _client(ctx).request("POST", scope_path(scope, action), action, body={"reason": reason, **extra})
    if as_json:
        _echo_json(doc)
        return
    b = doc.get("breaker", {})
    click.echo(f"{action} {b.get('scope', scope)}: now {b.get('state', '?')} (by {doc.get('actor', '?')}: {reason})")


_reason = click.option("--reason", required=True, help="Why (recorded in the breaker-events audit log).")
_json = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@breakers.command("force-open")
@click.argument("scope")
@_reason
@_json
@click.pass_context
def breakers_force_open(ctx: click.Context, scope: str, reason: str, as_json: bool) -> None:
    """Kill switch: deny every call of SCOPE until an operator resets it."""
    _act(ctx, "force-open", scope, reason, as_json)


@breakers.command("reset")
@click.argument("scope")
@_reason
@_json
@click.pass_context
def breakers_reset(ctx: click.Context, scope: str, reason: str, as_json: bool) -> None:
    """Close SCOPE now (clears back-off, probes and approvals)."""
    _act(ctx, "reset", scope, reason, as_json)


@breakers.command("approve")
@click.argument("scope")
@_reason
@click.option("--ttl", default=None, help="How long the approval lasts, e.g. 30m or 2h (default: policy's).")
@_json
@click.pass_context
def breakers_approve(ctx: click.Context, scope: str, reason: str, ttl: str | None, as_json: bool) -> None:
    """Allow the consequential tools of an escalated SCOPE for a while."""
    extra: dict[str, Any] = {}
    if ttl is not None:
        from breakers.policy import parse_duration

        try:
            extra["ttl_s"] = parse_duration(ttl)
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(f"{ttl!r} is not a duration like 30m or 2h ({exc})", param_hint="--ttl")
    _act(ctx, "approve", scope, reason, as_json, **extra)


# ------------------------------------------------------------------ incidents
@click.group()
@setting_option("--broker", setting="broker", help="Kafka bootstrap URL; TLS/SASL from TRIPWIRE_KAFKA__*.")
@setting_option("--topic", setting="topics.breaker_events", help="The audit topic.")
@click.option("--timeout", default=15.0, show_default=True, help="Seconds to wait for the broker / topic.")
@click.pass_context
def incidents(ctx: click.Context, broker: str | None, topic: str | None, timeout: float) -> None:
    """Incidents rebuilt from the breaker-events audit log."""
    ctx.obj = {"broker": broker, "topic": topic, "timeout": timeout}


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
@click.pass_context
def incidents_list(ctx: click.Context, only_open: bool, as_json: bool) -> None:
    """Every incident: id, scope, opened, state, trigger."""
    from streams.ops.incidents import summary_row

    log = _load(ctx)
    rows = [summary_row(i) for i in log.incidents if not only_open or i.state == "open"]
    if as_json:
        _echo_json({"incidents": rows, "records": log.records, "skipped": log.skipped})
        return
    from rich.table import Table

    table = Table(title=f"incidents in {ctx.obj['topic']} ({len(rows)})")
    for col in ("id", "scope", "opened", "state"):
        table.add_column(col, no_wrap=True)
    table.add_column("trigger", overflow="fold")
    for r in rows:
        state = r["state"] if r["state"] == "resolved" else f"open ({r['now']})"
        table.add_row(r["id"], r["scope"], _iso(r["opened_at"]), state, r["trigger"][:200])
    _console().print(table)


@incidents.command("show")
@click.argument("ident", metavar="ID")
@click.option("--markdown", is_flag=True, help="Post-mortem skeleton in Markdown.")
@_json
@click.pass_context
def incidents_show(ctx: click.Context, ident: str, markdown: bool, as_json: bool) -> None:
    """One incident: trigger, evidence, timeline, operator actions, resolution."""
    inc = _load(ctx).find(ident)
    if inc is None:
        _fail(f"no incident {ident!r} in {ctx.obj['topic']} (see `tripwire incidents list`)")
    if markdown:
        click.echo(inc.to_markdown(), nl=False)
    elif as_json:
        _echo_json(inc.to_dict())
    else:
        from rich.markdown import Markdown

        _console().print(Markdown(inc.to_markdown()))


COMMANDS: list[click.Command] = [breakers, incidents]
