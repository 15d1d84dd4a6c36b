"""Turn Grafana dashboard JSON into concrete PromQL, for checks against a real Prometheus.

    from tests.observability.dashboards import load_dashboards, panel_queries

    for name, dash in load_dashboards().items():
        for dashboard, panel, expr in panel_queries(dash, {"agent": "agent-1", "window": "5m"}):
            r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}).json()
            assert r["status"] == "success", (dashboard, panel, expr, r)

Grafana variables (`$var`, `${var}`, `${var:format}`, `[[var]]`) are replaced with plain strings:
``DEFAULT_VARIABLES`` overlaid with the ``variables`` argument. Values are inserted verbatim (no
regex escaping), so pass regex-ready values for variables used with `=~` (the defaults use `.*`,
Grafana's "All"). An unknown variable raises ``KeyError`` so a typo in a dashboard cannot slip
through as literal text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "grafana" / "dashboards"

#: What a dashboard shows with every variable at "All" / its default; Grafana's built-ins are set
#: for a 1 h time range and a 15 s scrape interval.
DEFAULT_VARIABLES: dict[str, str] = {
    "datasource": "prometheus",
    "tenant": ".*",        # value format "tenant:<t>/" for one tenant
    "agent": ".*",
    "tool": ".*",
    "instance": ".*",
    "window": "1h",
    "__rate_interval": "1m",
    "__interval": "30s",
    "__interval_ms": "30000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# ${name}, ${name:format}, [[name]], [[name:format]], $name (longest identifier wins)
_VAR = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def substitute(text: str, variables: Mapping[str, str] | None = None) -> str:
    """Replace Grafana variables in ``text``; KeyError on an unknown variable."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name.isdigit():  # "$1": a label_replace capture group (Grafana has no numeric variables)
            return m.group(0)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {text!r}")
        return str(values[name])

    return _VAR.sub(repl, text)


def _as_dashboard(dashboard_json: Any) -> dict:
    if isinstance(dashboard_json, Mapping):
        d = dict(dashboard_json)
    elif isinstance(dashboard_json, Path) or (isinstance(dashboard_json, str) and not dashboard_json.lstrip().startswith("{")):
        d = json.loads(Path(dashboard_json).read_text(encoding="utf-8"))
    else:
        d = json.loads(dashboard_json)
    # API export format {"dashboard": {...}, "meta": {...}}
    return d["dashboard"] if "dashboard" in d and "panels" not in d else d


def iter_panels(panels: list[dict]) -> Iterator[dict]:
    """All panels, including those nested in (collapsed) rows."""
    for p in panels or []:
        yield p
        yield from iter_panels(p.get("panels", []))


def panel_queries(
    dashboard_json: Any,
    variables: Mapping[str, str] | None = None,
    *,
    include_annotations: bool = True,
) -> list[tuple[str, str, str]]:
    """Every PromQL query of a dashboard as ``(dashboard title, panel title, concrete expr)``.

    ``dashboard_json``: the parsed dict, a JSON string, or a path to a dashboard file.
    ``variables``: values overriding ``DEFAULT_VARIABLES`` (keys without the ``$``).
    Hidden targets are included; annotation queries are returned with panel title
    ``"annotation: <name>"`` unless ``include_annotations`` is false. Panel titles are returned
    with their variables substituted too.
    """
    d = _as_dashboard(dashboard_json)
    title = d.get("title", d.get("uid", "?"))
    out: list[tuple[str, str, str]] = []
    for panel in iter_panels(d.get("panels", [])):
        for t in panel.get("targets", []) or []:
            expr = t.get("expr")
            if expr:
                out.append((title, substitute(panel.get("title", ""), variables), substitute(expr, variables)))
    if include_annotations:
        for a in d.get("annotations", {}).get("list", []):
            expr = a.get("expr") or (a.get("target") or {}).get("expr")
            if expr:
                out.append((title, f"annotation: {a.get('name', '?')}", substitute(expr, variables)))
    return out


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*$", re.S)


def variable_queries(dashboard_json: Any, variables: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Template variables' ``label_values(selector, label)`` queries as PromQL
    ``group by (label) (selector)``: ``(dashboard title, "variable: <name>", expr)``."""
    d = _as_dashboard(dashboard_json)
    title = d.get("title", d.get("uid", "?"))
    out = []
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, Mapping) else (q or v.get("definition", ""))
        m = _LABEL_VALUES.match(q)
        if not m:
            continue
        label = m.group(2)
        selector = m.group(1) or f'{{{label}!=""}}'

        out.append((title, f"variable: {v['name']}", substitute(f"group by ({label}) ({selector})", variables)))
    return out


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict]:
    """{file name: dashboard dict} of every committed dashboard."""
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))}


def all_queries(variables: Mapping[str, str] | None = None, directory: Path = DASHBOARD_DIR) -> list[tuple[str, str, str]]:
    """panel_queries + variable_queries over every committed dashboard."""
    out = []
    for dash in load_dashboards(directory).values():
        out.extend(panel_queries(dash, variables))
        out.extend(variable_queries(dash, variables))
    return out
