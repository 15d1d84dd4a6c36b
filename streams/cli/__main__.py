"""``python -m streams.cli`` runs the ``tripwire`` command."""

from streams.cli.main import main

main()
