"""``python -m streams.cli`` runs the ``tripwire`` command."""

from streams.cli import main

main()
