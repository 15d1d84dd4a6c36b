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
    """``load_settings`` for a command (``config=`` names the YAML file; None overrides are ignored);
    an invalid configuration is one clear error."""
    from pydantic import ValidationError

    from streams.settings import load_settings

    config = overrides.pop("config", None)
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from None


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
