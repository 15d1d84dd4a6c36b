"""``tripwire snapshot``: write the on-call overview from Prometheus to one HTML file."""

from __future__ import annotations

from pathlib import Path

import click


def _range(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from streams.ops.snapshot import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--prometheus", "prometheus_url", envvar="TRIPWIRE_PROMETHEUS_URL", show_envvar=True,
              default="http://127.0.0.1:9090", show_default=True, help="Prometheus base URL.")
@click.option("--range", "range_s", default="1h", show_default=True, callback=_range,
              help="How far back the charts go (30m, 1h, 6h, 1d …).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("snapshot.html"),
              show_default=True, help="HTML file to write.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per Prometheus request.")
def snapshot(prometheus_url: str, range_s: float, out: Path, timeout: float) -> None:
    """Render the on-call overview (breaker states, budget burn-down, near-miss rates) from
    Prometheus into a self-contained HTML file with inline SVG charts (no scripts, no external assets)."""
    from streams.ops.snapshot import SnapshotError, write_snapshot

    try:
        snap = write_snapshot(prometheus_url, range_s, out, timeout=timeout)
    except SnapshotError as exc:
        raise click.ClickException(str(exc)) from None
    not_closed = len(snap.breakers)
    click.echo(f"wrote {out} ({not_closed} breaker{'s' if not_closed != 1 else ''} not closed, "
               f"{len(snap.burn_down)} budgets, {len(snap.near_miss)} near-miss series)")


COMMANDS = [snapshot]
