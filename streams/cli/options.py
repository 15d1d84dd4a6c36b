"""The CLI's settings: click options backed by ``streams.settings`` and the settings a command runs with.

An option made by :func:`setting_option` reads its environment variable through click's
``envvar=`` (the same name the settings use, nested with ``__``), shows the default of
:data:`streams.settings.DEFAULTS`, and passes ``None`` when neither flag nor variable is
given, so the command resolves the value through the settings (env > config file > default).

>>> env_name("topics.traces"), env_name("broker")
('TRIPWIRE_TOPICS__TRACES', 'TRIPWIRE_BROKER')
>>> default_of("topics.breaker_events"), default_of("web_port")
('breaker-events', 6066)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from streams.settings import DEFAULTS

BROKER_HELP = (f"Kafka bootstrap URL, e.g. {DEFAULTS.broker}; TLS/SASL from TRIPWIRE_KAFKA__* or the config "
               "file's kafka: block (docs/deploy.md#tls-and-sasl)")
#: a worker's API as ``tripwire up`` starts it (env TRIPWIRE_API)
DEFAULT_API = DEFAULTS.web_url


def cli_settings(**overrides: Any) -> Any:
    """``load_settings`` for a command (``config=`` names the YAML file; None overrides are ignored).

    Every mistake is one line with its place and the fix, exit status 2 (:mod:`streams.cli.errors`):
    a missing or unparseable config file, a bad value (named by flag, variable or file:line); unknown
    ``TRIPWIRE_*`` variables are warned about once, with a did-you-mean."""
    from pydantic import ValidationError

    from streams.cli.errors import check_config_file, settings_problem, warn_unknown_env
    from streams.settings import load_settings

    config = overrides.pop("config", None)
    warn_unknown_env()
    check_config_file(config)
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        raise settings_problem(exc, config, {k: v for k, v in overrides.items() if v is not None}) from None


def kafka_security(settings: Any = None) -> Any:
    """TLS/SASL for the CLI's own Kafka clients, from ``TRIPWIRE_KAFKA__*`` or the ``kafka:`` block of
    ``$TRIPWIRE_CONFIG`` (the worker's settings); certificate files are loaded now, so a bad one fails here."""
    from streams.kafka.security import KafkaSecurityError

    security = (settings if settings is not None else cli_settings()).kafka
    try:
        security.ssl_context  # noqa: B018 - load the CA and client certificate once, up front
    except KafkaSecurityError as exc:
        raise click.ClickException(f"Kafka TLS: {exc}") from None
    return security


def env_name(setting: str) -> str:
    """The environment variable of a settings field (dotted for nested blocks)."""
    return "TRIPWIRE_" + setting.upper().replace(".", "__")


def default_of(setting: str) -> Any:
    """The default of a settings field (dotted for nested blocks)."""
    value: Any = DEFAULTS
    for part in setting.split("."):
        value = getattr(value, part)
    return value


class SettingOption(click.Option):
    """An option whose help shows the settings default while its value stays ``None`` when not given."""

    def __init__(self, *args: Any, setting: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting_default = default_of(setting)

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        return super().get_default(ctx, call=call) if call else self.setting_default


def setting_option(*decls: str, setting: str, **kwargs: Any) -> Callable[[Any], Any]:
    """``click.option`` for the settings field ``setting``: envvar, shown default, ``None`` when unset."""
    kwargs.setdefault("show_default", True)
    return click.option(*decls, cls=SettingOption, setting=setting, envvar=env_name(setting), show_envvar=True,
                        default=None, **kwargs)


def json_option(help: str = "Machine-readable output: JSON to FILE, or to stdout when no FILE is given "
                "(put --json last or write --json=FILE when a FILE argument follows).") -> Callable[[Any], Any]:
    """``--json [FILE]``: the value is ``None`` (not given), ``"-"`` (stdout) or a path."""
    return click.option("--json", "json_out", is_flag=False, flag_value="-", default=None, metavar="[FILE]",
                        help=help)


def emit_json(doc: Any, target: str | None) -> None:
    """Write ``doc`` as JSON to stdout (``target`` None or ``"-"``) or to the file ``target``."""
    import json
    from pathlib import Path

    text = json.dumps(doc, indent=2, sort_keys=True, default=str)
    if target is None or str(target) == "-":
        click.echo(text)
    else:
        Path(target).write_text(text + "\n", encoding="utf-8")


def printable(text: str) -> str:
    """``text`` with every non-ASCII or control character escaped (attacker-controlled strings on a terminal).

    >>> printable("a\\x1b[2Jb ×")
    'a\\\\x1b[2Jb \\\\xd7'
    """
    return ascii(text)[1:-1]


def shared_option(*decls: str, group: bool, **kwargs: Any) -> Callable[[Any], Any]:
    """An option of a command group that each of its subcommands accepts too, so both
    ``tripwire breakers --api URL list`` and ``tripwire breakers list --api URL`` work.

    The value lands in ``ctx.obj[<name>]``; the group's copy (``group=True``) resolves defaults
    and environment variables, a subcommand's copy only overrides when given explicitly."""

    def store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        obj = ctx.ensure_object(dict)
        if group or (value is not None and value != ()):
            obj[param.name] = value
        return value

    if not group:
        for k in ("setting", "cls", "envvar", "show_envvar", "show_default"):
            kwargs.pop(k, None)
        kwargs["default"] = None
        kwargs["help"] = (kwargs.get("help") or "") + " (also accepted before the subcommand)"
        return click.option(*decls, callback=store, expose_value=False, **kwargs)
    if "setting" in kwargs:
        return setting_option(*decls, callback=store, expose_value=False, **kwargs)
    return click.option(*decls, callback=store, expose_value=False, **kwargs)


def console(stderr: bool = False) -> Any:
    """A rich console sized to the real terminal (rich asks the terminal; piped output keeps rich's
    default): tables fold long cells instead of truncating them."""
    from rich.console import Console

    return Console(stderr=stderr)
