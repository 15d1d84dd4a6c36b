"""``tripwire snapshot`` without a Prometheus: SVG geometry on fixed data, the HTML page, the
queries against a mocked Prometheus HTTP API, and the errors a user sees.

The same command against a real Prometheus scraping a real stack: tests/e2e/test_prometheus_real_service.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import parse_qs

import httpx
import pytest
from click.testing import CliRunner

from streams.cli.main import main
from streams.ops.procutil import free_port
from streams.ops.snapshot import (
    Q_BREAKER_INFO,
    Q_BREAKER_SINCE,
    Q_BREAKERS,
    Q_BURN_DOWN,
    Q_NEAR_MISS_AGENTS,
    Q_NEAR_MISS_GLOBAL,
    Q_SCOPE_BURN_1H,
    Q_SCOPE_REMAINING,
    Q_STATE_COUNTS,
    BreakerRow,
    PrometheusClient,
    PrometheusUnreachable,
    Series,
    Snapshot,
    SnapshotError,
    collect,
    parse_duration,
    render_html,
    render_svg_chart,
    step_for,
)

T0 = 1_800_000_000.0


def _polylines(svg: str) -> list[list[tuple[float, float]]]:
    out = []
    for pts in re.findall(r'<polyline class="series"[^>]*points="([^"]+)"', svg):
        out.append([tuple(map(float, p.split(","))) for p in pts.split()])
    return out


def test_svg_chart_geometry_on_fixed_data() -> None:
    # 720x260, margins left 58, right 12, top 28, bottom 46 -> plot 650 x 186 at (58, 28)
    a = Series("budget-a", [(T0, 1.0), (T0 + 30, 0.5), (T0 + 60, 0.0)])
    b = Series("budget-b", [(T0, 0.25), (T0 + 60, 0.75)])
    svg = render_svg_chart("Budgets", [a, b], T0, T0 + 60, percent=True, y_min=0.0, y_max=1.0)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "xmlns" not in svg  # inline in HTML: no namespace URL needed
    lines = _polylines(svg)
    assert lines == [[(58.0, 28.0), (383.0, 121.0), (708.0, 214.0)], [(58.0, 167.5), (708.0, 74.5)]]
    # y axis 0..100 % in nice steps, x axis labels in UTC, legend with the last value
    for tick in ("0%", "20%", "40%", "60%", "80%", "100%"):
        assert f">{tick}</text>" in svg
    assert ">UTC</text>" in svg
    assert "budget-a (0%)" in svg and "budget-b (75%)" in svg
    assert "no data" not in svg


def test_svg_chart_scales_to_the_data_and_draws_a_zero_line_below_zero() -> None:
    s = Series("overspent", [(T0, 0.5), (T0 + 10, -1.5)])
    svg = render_svg_chart("Burn-down", [s], T0, T0 + 10, percent=True, y_min=0.0, y_max=1.0)
    (line,) = _polylines(svg)
    ys = [p[1] for p in line]
    assert 28.0 <= min(ys) and max(ys) <= 28.0 + 186.0  # inside the plot area
    assert ">-150%</text>" in svg or ">-200%</text>" in svg  # the axis extends below zero
    assert 'stroke="#999"' in svg  # the zero line


def test_svg_chart_empty_single_point_and_escaping() -> None:
    empty = render_svg_chart("Nothing <here>", [], T0, T0 + 60)
    assert "no data in this range" in empty and "<polyline" not in empty
    assert "Nothing &lt;here&gt;" in empty
    one = render_svg_chart("One", [Series('agent "<x>" & co', [(T0 + 30, 0.1)])], T0, T0 + 60)
    assert '<circle class="series"' in one and "<polyline" not in one
    assert "agent &quot;&lt;x&gt;&quot; &amp; co" in one
    assert '"<x>"' not in one


def _snapshot() -> Snapshot:
    return Snapshot(
        prometheus="http://prom.example:9090", generated_at=T0 + 3600, start=T0, end=T0 + 3600,
        breakers=[BreakerRow("agent:a<b>", "open", -0.5, 20.0), BreakerRow("tool:shell", "forced_open"),
                  BreakerRow("agent:c/tool:email.send", "escalated", 0.2, 15.0)],
        state_counts={"open": 1, "forced_open": 1, "escalated": 1, "closed": 40},
        burn_down=[Series("critical-incidents", [(T0, 1.0), (T0 + 3600, -0.5)])],
        near_miss=[Series("a<b>", [(T0, 0.02), (T0 + 3600, 0.3)]), Series("global", [(T0, 0.02), (T0 + 3600, 0.03)])],
    )


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(v for _, v in attrs if v)


def test_html_page_is_self_contained_with_breaker_table_and_charts() -> None:
    page = render_html(_snapshot())
    assert page.startswith("<!DOCTYPE html>")
    rows = re.findall(r'<tr data-scope="([^"]+)" data-state="([^"]+)"', page)
    assert rows == [("agent:a&lt;b&gt;", "open"), ("tool:shell", "forced_open"),
                    ("agent:c/tool:email.send", "escalated")]
    assert ">-50%</td>" in page and ">20×</td>" in page and ">–</td>" in page  # figures, missing ones as –
    assert page.count("<svg") == 2 and page.count('class="series"') == 3
    tags = _Tags()
    tags.feed(page)
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(tags.tags)
    assert not [v for v in tags.attrs if re.search(r"https?:|url\(", v)]
    # the only URL on the page is the Prometheus source, as text
    assert re.findall(r"https?://[^\s<\"]+", page) == ["http://prom.example:9090"]


def test_html_page_says_when_every_breaker_is_closed() -> None:
    snap = _snapshot()
    snap.breakers = []
    page = render_html(snap)
    assert "Every breaker is closed." in page and "<table" not in page


def _prom_handler(answers: dict[str, dict], seen: list[dict]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        params = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        seen.append({"path": request.url.path, **params})
        if params["query"] not in answers:
            return httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"})
        kind = "matrix" if request.url.path.endswith("query_range") else "vector"
        return httpx.Response(200, json={"status": "success",
                                         "data": {"resultType": kind, "result": answers[params["query"]]}})

    return httpx.MockTransport(handle)


def _vec(label: str, rows: dict[str, float]) -> list[dict]:
    return [{"metric": {label: k}, "value": [T0, str(v)]} for k, v in rows.items()]


def test_collect_queries_and_orders_the_overview() -> None:
    answers = {
        Q_SCOPE_REMAINING: _vec("scope", {"agent:a": -0.5, "agent:b": 0.9}),
        Q_SCOPE_BURN_1H: _vec("scope", {"agent:a": 14.0}),
        Q_BREAKERS: [{"metric": {"scope": "agent:b", "state": "escalated"}, "value": [T0, "1"]},
                     {"metric": {"scope": "agent:a", "state": "open"}, "value": [T0, "1"]},
                     {"metric": {"scope": "agent:drill-1", "state": "open"}, "value": [T0, "1"]},
                     {"metric": {"scope": "tool:x", "state": "forced_open"}, "value": [T0, "1"]}],
        Q_BREAKER_INFO: [{"metric": {"scope": "agent:a", "state": "open", "budget": "critical-incidents",
                                     "reason": "2 critical incidents", "evidence": "1h: tool calls 40", "drill": "false"},
                          "value": [T0, "1"]},
                         {"metric": {"scope": "agent:drill-1", "state": "open", "budget": "b", "reason": "drill",
                                     "evidence": "-", "drill": "true"}, "value": [T0, "1"]}],
        Q_BREAKER_SINCE: _vec("scope", {"agent:a": T0 - 600, "agent:drill-1": T0}),
        Q_STATE_COUNTS: _vec("state", {"open": 1, "closed": 9}),
        Q_BURN_DOWN: [{"metric": {"budget": "b1"}, "values": [[T0, "1"], [T0 + 60, "0.8"]]},
                      {"metric": {"budget": "b2"}, "values": [[T0, "1"], [T0 + 60, "-0.2"]]}],
        Q_NEAR_MISS_AGENTS: [{"metric": {"agent": f"agent-{i}"}, "values": [[T0, "0.01"], [T0 + 60, str(i / 100)]]}
                             for i in range(12)],
        Q_NEAR_MISS_GLOBAL: [{"metric": {}, "values": [[T0, "NaN"], [T0 + 60, "0.02"]]}],
    }
    seen: list[dict] = []
    with PrometheusClient("http://prom:9090/", transport=_prom_handler(answers, seen)) as client:
        snap = collect(client, 3600, now=T0 + 60)
    assert [(r.scope, r.state, r.remaining, r.burn_1h) for r in snap.breakers] == [
        ("tool:x", "forced_open", None, None), ("agent:a", "open", -0.5, 14.0), ("agent:b", "escalated", 0.9, None),
        ("agent:drill-1", "open", None, None)]  # drills last
    a = snap.breakers[1]
    assert (a.budget, a.reason, a.evidence, a.since, a.drill, a.runbook) == (
        "critical-incidents", "2 critical incidents", "1h: tool calls 40", T0 - 600, False, "tripwirebreakeropen")
    assert snap.breakers[3].drill and not snap.breakers[0].drill and snap.breakers[0].since is None
    assert snap.state_counts == {"open": 1.0, "closed": 9.0}
    assert [s.label for s in snap.burn_down] == ["b2", "b1"]  # lowest remaining first
    labels = [s.label for s in snap.near_miss]
    assert labels[:2] == ["agent-11", "agent-10"] and len(labels) == 8  # worst 7 agents + global
    assert snap.near_miss[-1].points == [(T0 + 60, 0.02)]  # NaN dropped
    ranges = [q for q in seen if q["path"] == "/api/v1/query_range"]
    assert len(seen) == 9 and len(ranges) == 3
    assert all(float(q["start"]) == T0 + 60 - 3600 and float(q["end"]) == T0 + 60 and float(q["step"]) == 15
               for q in ranges)


def test_client_errors_are_clear() -> None:
    with PrometheusClient("http://prom:9090", transport=_prom_handler({}, [])) as client:
        with pytest.raises(SnapshotError, match="Prometheus rejected 'up': bad_data: parse error"):
            client.query("up")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with PrometheusClient("http://prom:9090", transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(PrometheusUnreachable, match="cannot reach Prometheus at http://prom:9090"):
            client.query("up")

    html_page = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>not prometheus</html>"))
    with PrometheusClient("http://prom:9090", transport=html_page) as client:
        with pytest.raises(SnapshotError, match="is this a Prometheus server"):
            client.query("up")


def test_durations_and_steps() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400
    for bad in ("", "1x", "h", "-5", "0", "1h 2m"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert step_for(3600) == 15 and step_for(60) == 1


def test_cli_reports_unreachable_prometheus_and_bad_range(tmp_path) -> None:
    runner = CliRunner()
    port = free_port()
    out = tmp_path / "s.html"
    r = runner.invoke(main, ["snapshot", "--prometheus", f"http://127.0.0.1:{port}", "--out", str(out)])
    assert r.exit_code == 1
    assert f"cannot reach Prometheus at http://127.0.0.1:{port}" in r.output
    assert not out.exists()
    r = runner.invoke(main, ["snapshot", "--range", "soon"])
    assert r.exit_code == 2 and "not a duration" in r.output
