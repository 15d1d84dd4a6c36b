"""Run one production worker process (``tripwire worker``)."""

from __future__ import annotations

import logging

from streams.settings import Settings


def run_worker(settings: Settings, create_topics: bool = True) -> None:
    """Start the faust worker and block until SIGINT/SIGTERM.

    uvloop is installed before faust is imported: faust's per-event machinery
    spends most of its time in event-loop turns, and uvloop makes them cheaper.
    """
    if settings.uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - optional on non-Linux
            pass
    if create_topics:
        from streams.kafka.topics import ensure_topics

        ensure_topics(settings)
    import faust

    from streams.worker.app import create_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    logging.getLogger("faust").setLevel(logging.WARNING if settings.log_level != "debug" else logging.DEBUG)
    worker.execute_from_commandline()
