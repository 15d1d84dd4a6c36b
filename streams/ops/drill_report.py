"""Drill reports: a terminal table (rich), JSON and Markdown files."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from rich.table import Table

from streams.ops.drill_result import FAIL, PASS, DrillResult

_STYLE = {PASS: "green", FAIL: "bold red"}


def _when(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def table(result: DrillResult) -> Table:
    """The step table shown at the end of ``tripwire drill``."""
    t = Table(title=f"drill {result.drill_id}: {result.profile} on {result.scope} → {result.result.upper()}")
    for col in ("step", "result", "time", "SLO", "detail"):
        t.add_column(col, overflow="fold")
    for s in result.steps:
        t.add_row(s.name, f"[{_STYLE.get(s.status, 'yellow')}]{s.status}[/]", _secs(s.seconds),
                  "-" if s.slo_s is None else f"≤ {s.slo_s:g}s", s.detail)
    return t


def markdown(result: DrillResult) -> str:
    """A Markdown report (for the incident/drill log)."""
    lines = [
        f"# tripwire drill {result.drill_id}: {result.result.upper()}",
        "",
        f"- profile: `{result.profile}` (expects `{result.expect_state}`)",
        f"- scope: `{result.scope}` (agent `{result.agent}`)",
        f"- started: {_when(result.started_at)}; finished: {_when(result.finished_at)}",
        f"- events injected: {result.events_sent}",
        "- targets: " + ", ".join(f"{k} `{v}`" for k, v in result.targets.items() if v),
    ]
    if result.failed_steps():
        lines.append(f"- **failed steps: {', '.join(result.failed_steps())}**")
    if result.chaos.get("kill_worker"):
        lines.append(f"- chaos: {json.dumps(result.chaos.get('kill_worker'), sort_keys=True)}")
    lines += ["", "| step | result | time | SLO | detail |", "|---|---|---|---|---|"]
    for s in result.steps:
        detail = s.detail.replace("|", "\\|").replace("\n", " ")
        slo = "-" if s.slo_s is None else f"≤ {s.slo_s:g}s"
        lines.append(f"| {s.name} | {s.status} | {_secs(s.seconds)} | {slo} | {detail} |")
    lines += ["", "Reported to the deployment: " + (", ".join(f"{k}: {v}" for k, v in result.reported.items())
                                                     or "not reported"), ""]
    return "\n".join(lines)


def write(result: DrillResult, report_dir: Path) -> tuple[Path, Path]:
    """Write ``<report_dir>/<drill_id>.json`` and ``.md``; returns both paths."""
    report_dir.mkdir(parents=True, exist_ok=True)
    js = report_dir / f"{result.drill_id}.json"
    md = report_dir / f"{result.drill_id}.md"
    js.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    md.write_text(markdown(result), encoding="utf-8")
    return js, md


__all__ = ["markdown", "table", "write"]
