"""The ``tripwire`` command line, one module per command group (``tripwire --help``).

:mod:`streams.cli.main` holds the group and the small commands; the command groups that live in
their own modules (each exports ``COMMANDS``) are added here, so no module imports its parent.
"""

from streams.cli.breakers import COMMANDS as _BREAKER_COMMANDS
from streams.cli.dlq import COMMANDS as _DLQ_COMMANDS
from streams.cli.drill import COMMANDS as _DRILL_COMMANDS
from streams.cli.main import main
from streams.cli.rules import COMMANDS as _RULES_COMMANDS
from streams.cli.snapshot import COMMANDS as _SNAPSHOT_COMMANDS

for _command in (*_BREAKER_COMMANDS, *_DRILL_COMMANDS, *_SNAPSHOT_COMMANDS, *_RULES_COMMANDS, *_DLQ_COMMANDS):
    main.add_command(_command)

__all__ = ["main"]
