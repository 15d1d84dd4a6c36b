"""``tripwire snapshot``: write the on-call overview from Prometheus to one HTML file."""

from __future__ import annotations

from pathlib import Path

import click

from streams.cli.options import emit_json, json_option


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
@json_option("The page's data (non-closed breakers, state counts) as JSON to FILE, or to stdout when no FILE "
             "is given (the HTML is written either way).")
def snapshot(prometheus_url: str, range_s: float, out: Path, timeout: float, json_out: str | None) -> None:
    """Render the on-call overview (breaker states, budget burn-down, near-miss rates) from
    Prometheus into a self-contained HTML file with inline SVG charts (no scripts, no external assets)."""
    from streams.ops.snapshot import SnapshotError, write_snapshot

    try:
        snap = write_snapshot(prometheus_url, range_s, out, timeout=timeout)
    except SnapshotError as exc:
        raise click.ClickException(str(exc)) from None
    not_closed = len(snap.breakers)
    if json_out is not None:
        import dataclasses

        emit_json({"out": str(out), "prometheus": snap.prometheus, "generated_at": snap.generated_at,
                   "breakers": [dataclasses.asdict(b) if dataclasses.is_dataclass(b) else b for b in snap.breakers],
                   "state_counts": snap.state_counts, "budgets": len(snap.burn_down),
                   "near_miss_series": len(snap.near_miss)}, json_out)
        if json_out == "-":
            return
    click.echo(f"wrote {out} ({not_closed} breaker{'s' if not_closed != 1 else ''} not closed, "
               f"{len(snap.burn_down)} budgets, {len(snap.near_miss)} near-miss series)")


COMMANDS = [snapshot]
