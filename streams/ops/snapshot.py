"""``tripwire snapshot``: the on-call overview as one self-contained HTML file.

Reads Prometheus's HTTP API (``/api/v1/query`` and ``/api/v1/query_range``) — the same series the
Grafana on-call dashboard shows — and writes an HTML page with a breaker table and inline SVG
charts: no scripts, no stylesheets or fonts from elsewhere, so it can be attached to an incident
ticket or mailed and still renders offline.

Sections:

* breakers not closed, production first, drills in their own table: the same first-row table as the
  Grafana on-call dashboard (scope, state, budget, reason, key evidence, since when, for how long,
  lowest budget left, highest 1 h burn rate, runbook section), and the count of production scopes
  per state;
* budget burn-down: the lowest remaining share of each budget over the range;
* near-miss rates over the range: the worst agents (1 h window, all tools) and the global ratio
  from the event counters (recording rule ``tripwire:near_miss:ratio_rate5m``).

>>> parse_duration("1h"), parse_duration("90m"), parse_duration("1d12h"), parse_duration("45")
(3600.0, 5400.0, 129600.0, 45.0)
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from breakers.state_machine import ESCALATED, FORCED_OPEN, HALF_OPEN, OPEN, SHADOW
from detectors.durations import format_age, format_duration, parse_seconds

#: breaker states worth a row, most severe first (closed is the normal case and omitted)
STATE_ORDER = (FORCED_OPEN, OPEN, ESCALATED, HALF_OPEN, SHADOW)
STATE_COLOURS = {"forced_open": "#7b1fa2", "open": "#c62828", "escalated": "#ef6c00",
                 "half_open": "#f9a825", "shadow": "#546e7a", "closed": "#2e7d32"}
#: line colours (colour-blind friendly, Okabe-Ito + extras)
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#8c564b")
MAX_LINES = 8  # lines per chart; the rest are dropped (worst first are kept)

#: drill scopes (agent ids with the policy's drill_prefix, "drill-") stay out of production figures
DRILL_SCOPE_RE = ".*agent:drill-.*"
#: docs/runbooks.md section for a scope in each non-closed state (the dashboards link the same anchors)
RUNBOOK_BY_STATE = {"open": "tripwirebreakeropen", "half_open": "tripwirebreakeropen",
                    "escalated": "tripwirebreakerescalated", "forced_open": "tripwirebreakerforcedopen",
                    "shadow": "tripwireburnrateticket"}

Q_BREAKERS = 'max by (scope, state) (tripwire_breaker_state{state!="closed"}) == 1'
Q_BREAKER_INFO = "max by (scope, state, budget, reason, evidence, drill) (tripwire_breaker_state_info)"
Q_BREAKER_SINCE = "max by (scope) (tripwire_breaker_state_since_timestamp_seconds)"
Q_STATE_COUNTS = f'sum by (state) (tripwire_breaker_state{{scope!~"{DRILL_SCOPE_RE}"}})'
Q_SCOPE_REMAINING = "min by (scope) (tripwire_budget_remaining_ratio)"
Q_SCOPE_BURN_1H = 'max by (scope) (tripwire_burn_rate{window="1h"})'
Q_BURN_DOWN = f'min by (budget) (tripwire_budget_remaining_ratio{{scope!~"{DRILL_SCOPE_RE}"}})'
Q_NEAR_MISS_AGENTS = 'max by (agent) (tripwire_near_miss_rate{agent!="*", agent!~"drill-.*", tool="*", window="1h"})'
Q_NEAR_MISS_GLOBAL = "tripwire:near_miss:ratio_rate5m"



class SnapshotError(Exception):
    """A snapshot could not be made; the message is meant for the user."""


class PrometheusUnreachable(SnapshotError):
    """No answer from the Prometheus server."""


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus-style duration (``30m``, ``1h``, ``1d12h``) or a plain number.

    >>> parse_duration("1d12h")
    129600.0
    """
    try:
        return parse_seconds(text)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 1h, 6h, 1d)") from None


class PrometheusClient:
    """The two read endpoints of the Prometheus HTTP API, with errors a person can act on."""

    def __init__(self, base_url: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            resp = self._http.get(path, params=params)
        except httpx.TransportError as exc:
            raise PrometheusUnreachable(f"cannot reach Prometheus at {self.base_url}: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            raise SnapshotError(f"{self.base_url}{path} answered HTTP {resp.status_code} with no Prometheus "
                                f"API response (is this a Prometheus server?)") from None
        if body.get("status") != "success":
            raise SnapshotError(f"Prometheus rejected {params.get('query')!r}: "
                                f"{body.get('errorType', 'error')}: {body.get('error', resp.status_code)}")
        data = body.get("data", {})
        if data.get("resultType") not in ("vector", "matrix"):
            raise SnapshotError(f"unexpected result type {data.get('resultType')!r} for {params.get('query')!r}")
        return list(data.get("result", []))

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant vector: ``[{"metric": {...}, "value": [ts, "v"]}, …]``."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return self._get("/api/v1/query", params)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range matrix: ``[{"metric": {...}, "values": [[ts, "v"], …]}, …]``."""
        return self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})


@dataclass
class Series:
    """One line of a chart."""

    label: str
    points: list[tuple[float, float]]  # (unix time, value), NaN/Inf already dropped

    @property
    def last(self) -> float:
        return self.points[-1][1] if self.points else math.nan


@dataclass
class BreakerRow:
    """One non-closed scope: the on-call table's row."""

    scope: str
    state: str
    remaining: float | None = None  # lowest budget remaining ratio of the scope
    burn_1h: float | None = None  # highest 1 h burn rate of the scope
    budget: str = "-"
    reason: str = "-"
    evidence: str = "-"
    since: float | None = None  # when the state began, Unix seconds
    drill: bool = False

    @property
    def runbook(self) -> str:
        """The docs/runbooks.md section for the state."""
        return RUNBOOK_BY_STATE.get(self.state, "")


@dataclass
class Snapshot:
    """Everything the page shows, fetched at ``generated_at`` over ``[start, end]``."""

    prometheus: str
    generated_at: float
    start: float
    end: float
    breakers: list[BreakerRow] = field(default_factory=list)
    state_counts: dict[str, float] = field(default_factory=dict)
    burn_down: list[Series] = field(default_factory=list)
    near_miss: list[Series] = field(default_factory=list)


def _value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def _finite(v: float) -> bool:
    return not (math.isnan(v) or math.isinf(v))


def _series(matrix: list[dict[str, Any]], label_key: str, prefix: str = "") -> list[Series]:
    out = []
    for item in matrix:
        pts = [(float(t), float(v)) for t, v in item.get("values", [])]
        pts = [(t, v) for t, v in pts if _finite(v)]
        if pts:
            out.append(Series(prefix + item["metric"].get(label_key, "?"), pts))
    return out


def step_for(range_s: float, points: int = 240) -> float:
    """Query resolution: about ``points`` points over the range, at least one second."""
    return max(1.0, math.ceil(range_s / points))


def collect(client: PrometheusClient, range_s: float, now: float | None = None) -> Snapshot:
    """Query everything the overview needs (9 requests)."""
    end = time.time() if now is None else now
    start = end - range_s
    step = step_for(range_s)
    snap = Snapshot(prometheus=client.base_url, generated_at=end, start=start, end=end)

    remaining = {s["metric"].get("scope", ""): _value(s) for s in client.query(Q_SCOPE_REMAINING, end)}
    burn = {s["metric"].get("scope", ""): _value(s) for s in client.query(Q_SCOPE_BURN_1H, end)}
    info = {s["metric"].get("scope", ""): s["metric"] for s in client.query(Q_BREAKER_INFO, end)}
    since = {s["metric"].get("scope", ""): _value(s) for s in client.query(Q_BREAKER_SINCE, end)}
    rows = []
    for s in client.query(Q_BREAKERS, end):
        scope, state = s["metric"].get("scope", "?"), s["metric"].get("state", "?")
        why = info.get(scope, {})
        drill = why.get("drill") == "true" if "drill" in why else "agent:drill-" in scope
        rows.append(BreakerRow(scope, state, remaining.get(scope), burn.get(scope), budget=why.get("budget", "-"),
                               reason=why.get("reason", "-"), evidence=why.get("evidence", "-"),
                               since=since.get(scope), drill=drill))
    rank = {st: i for i, st in enumerate(STATE_ORDER)}
    rows.sort(key=lambda r: (r.drill, rank.get(r.state, len(rank)), r.remaining if r.remaining is not None else 2.0,
                             r.scope))
    snap.breakers = rows
    snap.state_counts = {s["metric"].get("state", "?"): _value(s) for s in client.query(Q_STATE_COUNTS, end)}

    snap.burn_down = sorted(_series(client.query_range(Q_BURN_DOWN, start, end, step), "budget"),
                            key=lambda s: (s.last, s.label))
    agents = sorted(_series(client.query_range(Q_NEAR_MISS_AGENTS, start, end, step), "agent"),
                    key=lambda s: (-s.last, s.label))[: MAX_LINES - 1]
    total = [Series("global (event counters, 5m)", [(float(t), float(v)) for t, v in item.get("values", [])
                                                    if _finite(float(v))])
             for item in client.query_range(Q_NEAR_MISS_GLOBAL, start, end, step)]
    snap.near_miss = agents + [s for s in total if s.points]
    return snap


# ----------------------------------------------------------------------------------- rendering
def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(1, ticks)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _num(v: float) -> str:
    """Three significant digits without exponents for everyday magnitudes."""
    if not _finite(v):
        return "–"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _fmt(v: float, percent: bool) -> str:
    return _num(v * 100) + "%" if percent and _finite(v) else _num(v)


def _fmt_time(ts: float, span: float) -> str:
    fmt = "%H:%M:%S" if span <= 600 else ("%H:%M" if span <= 2 * 86400 else "%m-%d %H:%M")
    return time.strftime(fmt, time.gmtime(ts))


def render_svg_chart(
    title: str,
    series: Sequence[Series],
    start: float,
    end: float,
    *,
    percent: bool = False,
    y_min: float | None = 0.0,
    y_max: float | None = None,
    width: int = 720,
    height: int = 260,
) -> str:
    """A line chart as an inline ``<svg>`` element (no xmlns URL needed inside HTML).

    The x axis spans ``[start, end]`` (UTC labels), the y axis fits the data (from ``y_min`` when
    given, up to ``y_max`` when given). Empty ``series`` draws the frame with "no data".
    """
    left, right, top, bottom = 58, 12, 28, 46
    legend_rows = math.ceil(len(series) / 3) if series else 0
    total_h = height + 18 * legend_rows
    pw, ph = width - left - right, height - top - bottom
    span = max(end - start, 1e-9)
    values = [v for s in series for _, v in s.points]
    lo = min(values) if values else 0.0
    hi = max(values) if values else 1.0
    if y_min is not None:
        lo = min(lo, y_min)
    if y_max is not None:
        hi = max(hi, y_max)
    if hi - lo < 1e-12:
        hi = lo + (abs(lo) or 1.0)
    ystep = _nice_step(hi - lo)
    lo = math.floor(lo / ystep) * ystep
    hi = math.ceil(hi / ystep) * ystep

    def x(t: float) -> float:
        return left + (t - start) / span * pw

    def y(v: float) -> float:
        return top + (1 - (v - lo) / (hi - lo)) * ph

    esc = html.escape
    out = [f'<svg class="chart" role="img" aria-label="{esc(title)}" width="{width}" height="{total_h}" '
           f'viewBox="0 0 {width} {total_h}">',
           f"<title>{esc(title)}</title>",
           f'<text x="{left}" y="16" class="ct">{esc(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#bbb"/>']
    n_y = int(round((hi - lo) / ystep))
    for i in range(n_y + 1):
        v = lo + i * ystep
        yy = y(v)
        grid = "#999" if abs(v) < ystep / 2 and lo < 0 else "#eee"  # zero line when values go negative
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="{grid}"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" class="ax">{esc(_fmt(v, percent))}</text>')
    for i in range(6):
        t = start + span * i / 5
        xx = x(t)
        out.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#f3f3f3"/>')
        out.append(f'<text x="{xx:.1f}" y="{top + ph + 16}" text-anchor="middle" class="ax">'
                   f"{esc(_fmt_time(t, span))}</text>")
    out.append(f'<text x="{left + pw}" y="{top + ph + 32}" text-anchor="end" class="ax">UTC</text>')
    if not any(s.points for s in series):
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" text-anchor="middle" class="nd">'
                   "no data in this range</text>")
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(x(t), y(v)) for t, v in s.points if start <= t <= end]
        if len(pts) == 1:
            out.append(f'<circle class="series" cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" r="2.5" fill="{colour}">'
                       f"<title>{esc(s.label)}</title></circle>")
        elif pts:
            d = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            out.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="1.8" points="{d}">'
                       f"<title>{esc(s.label)}</title></polyline>")
        lx = left + (i % 3) * (pw / 3)
        ly = height + 18 * (i // 3) - 6
        out.append(f'<rect x="{lx:.1f}" y="{ly - 9:.1f}" width="12" height="4" fill="{colour}"/>')
        out.append(f'<text x="{lx + 16:.1f}" y="{ly - 4:.1f}" class="lg">{esc(s.label)} '
                   f"({esc(_fmt(s.last, percent))})</text>")
    out.append("</svg>")
    return "\n".join(out)


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1280px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#666;font-size:12px}
table{border-collapse:collapse;margin:6px 0} th,td{border:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{color:#fff;border-radius:3px;padding:1px 6px;font-size:12px}
.ok{color:#2e7d32}
svg.chart{display:block;margin:8px 0;font-family:system-ui,sans-serif}
svg .ct{font-size:13px;font-weight:600} svg .ax{font-size:10px;fill:#555} svg .lg{font-size:11px;fill:#333}
svg .nd{font-size:13px;fill:#999}
"""


def _state_badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#444")
    return f'<span class="state" style="background:{colour}">{html.escape(state)}</span>'


def _opt(v: float | None, percent: bool = False, suffix: str = "") -> str:
    if v is None or not _finite(v):
        return "–"
    return html.escape(_fmt(v, percent) + suffix)


#: the on-call table's columns, as on the Grafana dashboard's first row
BREAKER_COLUMNS = ("scope", "state", "budget", "reason", "key evidence", "since (UTC)", "for",
                   "budget left (lowest)", "burn rate 1h (highest)", "runbook section")


def breaker_table(rows: Sequence[BreakerRow], now: float, css_class: str = "breakers") -> str:
    """The on-call table of non-closed scopes: who is cut off, why, since when, what to read."""
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in BREAKER_COLUMNS)
    out = [f'<table class="{esc(css_class)}"><thead><tr>{head}</tr></thead><tbody>']
    for r in rows:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.since)) if r.since is not None else "–"
        held = format_age(now - r.since) if r.since is not None else "–"
        runbook = f"<code>#{esc(r.runbook)}</code>" if r.runbook else "–"
        out.append(f'<tr data-scope="{esc(r.scope)}" data-state="{esc(r.state)}"><td><code>{esc(r.scope)}'
                   f"</code></td><td>{_state_badge(r.state)}</td><td>{esc(r.budget)}</td><td>{esc(r.reason)}</td>"
                   f"<td>{esc(r.evidence)}</td><td>{esc(since)}</td><td>{esc(held)}</td>"
                   f'<td class="num">{_opt(r.remaining, percent=True)}</td>'
                   f'<td class="num">{_opt(r.burn_1h, suffix="×")}</td><td>{runbook}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def render_html(snap: Snapshot) -> str:
    """The whole page: self-contained HTML with inline CSS and SVG, no scripts."""
    esc = html.escape
    span = snap.end - snap.start
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snap.generated_at))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>tripwire on-call snapshot {esc(when)}</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>tripwire on-call snapshot</h1>",
             f'<p class="meta">{esc(when)} · last {esc(format_duration(span))} · source: {esc(snap.prometheus)}</p>']

    counts = " · ".join(f"{_state_badge(st)} {int(snap.state_counts.get(st, 0))}" for st in STATE_ORDER)
    production = [r for r in snap.breakers if not r.drill]
    drills = [r for r in snap.breakers if r.drill]
    parts.append(f"<h2>Breakers not closed (production)</h2><p>{counts}</p>")
    if production:
        parts.append(breaker_table(production, snap.generated_at, "breakers"))
    else:
        parts.append('<p class="ok">Every breaker is closed.</p>')
    if drills:
        parts.append("<h2>Drill breakers not closed</h2>")
        parts.append(breaker_table(drills, snap.generated_at, "breakers drills"))

    parts.append("<h2>Budget burn-down</h2>")
    parts.append(render_svg_chart("Lowest budget remaining per budget", snap.burn_down, snap.start, snap.end,
                                  percent=True, y_min=0.0, y_max=1.0))
    parts.append("<h2>Near-miss rates</h2>")
    parts.append(render_svg_chart("Near-miss rate: worst agents (1h window, all tools) and global",
                                  snap.near_miss, snap.start, snap.end, percent=True, y_min=0.0))
    parts.append('<p class="meta">Made by <code>tripwire snapshot</code> from Prometheus series '
                 "tripwire_breaker_state, tripwire_breaker_state_info, tripwire_breaker_state_since_timestamp_seconds, "
                 "tripwire_budget_remaining_ratio, tripwire_burn_rate, "
                 "tripwire_near_miss_rate and tripwire:near_miss:ratio_rate5m.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_snapshot(prometheus_url: str, range_s: float, out: Path, timeout: float = 10.0) -> Snapshot:
    """Fetch from Prometheus and write the HTML page to ``out``; returns what was shown."""
    with PrometheusClient(prometheus_url, timeout=timeout) as client:
        snap = collect(client, range_s)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(snap), encoding="utf-8")
    return snap
