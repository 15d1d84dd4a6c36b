#!/usr/bin/env python3
"""Generate tripwire's Grafana dashboards (grafana/dashboards/*.json).

Plain dict building, no dependencies beyond the standard library. The JSON files are committed;
tests/observability/test_dashboards.py checks they equal this script's output, so after editing
this file run:

    python grafana/build_dashboards.py          # rewrite grafana/dashboards/*.json
    python grafana/build_dashboards.py --check  # exit 1 if the committed JSON is stale

Queries may only use metrics from docs/metrics.md, Prometheus built-ins (`up`, `ALERTS`) and the
recording rules of deploy/prometheus/rules/ (checked by the tests).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
RUNBOOK_RULES = "tripwire-runbooks.yml"
SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
WINDOWS = ["5m", "30m", "1h", "6h", "1d", "3d"]
BREAKER_STATES = ["closed", "open", "half_open", "escalated", "forced_open", "shadow"]

# Filters shared by the queries. `$tenant` holds "tenant:<t>/" (or ".*" for All), so
# `scope=~"$tenant.*"` selects the scopes of one tenant, or every scope.
TENANT_SCOPE = 'scope=~"${tenant}.*"'
AGENT_SCOPE = 'scope=~"${tenant}agent:${agent}(/.*)?"'
# Drill scopes (agent id with the policy's drill_prefix, "drill-") stay out of production panels.
PROD_SCOPE = 'scope!~".*agent:drill-.*"'
DRILL_SCOPE = 'scope=~".*agent:drill-.*"'
# The published runbook (settings.DEFAULT_RUNBOOK_BASE_URL; a dashboard variable, override per Grafana).
RUNBOOK_BASE = "https://github.com/tripwire/tripwire/blob/main/docs/runbooks.md"
#: runbook section (docs/runbooks.md anchor) for a scope in each non-closed breaker state
RUNBOOK_BY_STATE = {"open": "tripwirebreakeropen", "half_open": "tripwirebreakeropen",
                    "escalated": "tripwirebreakerescalated", "forced_open": "tripwirebreakerforcedopen",
                    "shadow": "tripwireburnrateticket"}
AGENT_DETAIL_UID = "tripwire-agent"


# ---------------------------------------------------------------- building blocks


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if fmt != "time_series":
        t["format"] = fmt
    return t


def targets(*specs) -> list[dict]:
    """targets(("expr", "legend"), ...) with refIds A, B, C, ..."""
    out = []
    for i, spec in enumerate(specs):
        expr, legend = spec if isinstance(spec, tuple) else (spec, "")
        out.append(target(expr, legend, ref=chr(ord("A") + i)))
    return out


def thresholds(*steps) -> dict:
    """thresholds(("green", None), ("red", 1)) -> Grafana absolute thresholds."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def timeseries(title, tgts, unit="short", description="", stack=False, bars=False, min_=None, max_=None,
               thresh=None, overrides=None) -> dict:
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    if thresh:
        custom["thresholdsStyle"] = {"mode": "dashed"}
    defaults = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if thresh:
        defaults["thresholds"] = thresh
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, tgts, unit="short", description="", thresh=None, color_mode="value", text_mode="auto") -> dict:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "thresholds"},
                "thresholds": thresh or thresholds(("green", None)),
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": color_mode,
            "graphMode": "none",
            "textMode": text_mode,
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }


def table(title, tgts, description="", hide=("Time", "Value"), rename=None, unit="short") -> dict:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"align": "auto", "filterable": True}}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {h: True for h in hide}, "renameByName": rename or {}}},
        ],
    }


def bargauge(title, tgts, unit="percentunit", description="", thresh=None, min_=0, max_=None) -> dict:
    defaults = {"unit": unit, "min": min_, "color": {"mode": "thresholds"},
                "thresholds": thresh or thresholds(("green", None))}
    if max_ is not None:
        defaults["max"] = max_
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        },
    }


def with_agent(expr: str) -> str:
    """``expr`` with an ``agent`` label taken from its ``scope`` (none for global and tool scopes)."""
    return f'label_replace({expr}, "agent", "$1", "scope", "(?:.*/)?agent:([^/]+)(?:/.*)?")'


def with_runbook(expr: str) -> str:
    """``expr`` with a ``runbook`` label: the docs/runbooks.md section for its ``state``."""
    for state, anchor in RUNBOOK_BY_STATE.items():
        expr = f'label_replace({expr}, "runbook", "{anchor}", "state", "{state}")'
    return expr


def agent_link(field: str = "${__data.fields.agent}") -> dict:
    return {"title": "Agent detail: " + field, "url": f"/d/{AGENT_DETAIL_UID}?var-agent={field}&${{__url_time_range}}",
            "targetBlank": False}


def runbook_link(anchor: str) -> dict:
    return {"title": "Runbook", "url": "${runbook_base}#" + anchor, "targetBlank": True}


def with_links(panel: dict, links: list[dict], field: str | None = None) -> dict:
    """Data links on every field of ``panel`` (or on the field named ``field`` only)."""
    if field is None:
        panel["fieldConfig"]["defaults"]["links"] = links
    else:
        panel["fieldConfig"]["overrides"].append(
            {"matcher": {"id": "byName", "options": field}, "properties": [{"id": "links", "value": links}]})
    return panel


def field_props(panel: dict, name: str, **props) -> dict:
    """Per-column properties of a table (unit, custom.hidden, ...)."""
    panel["fieldConfig"]["overrides"].append(
        {"matcher": {"id": "byName", "options": name}, "properties": [{"id": k.replace("__", "."), "value": v}
                                                                      for k, v in props.items()]})
    return panel


def not_closed_table(title: str, drill: bool | None, description: str, scope_sel: str = TENANT_SCOPE) -> dict:
    """Every non-closed scope (production or drills) with budget, reason, evidence, since when, budget left,
    and links to *Agent detail* and the runbook section: the first question at 3 a.m."""
    sel = scope_sel if drill is None else f'drill="{"true" if drill else "false"}", {scope_sel}'
    info = with_runbook(with_agent(f"max by (scope, state, budget, reason, evidence) (tripwire_breaker_state_info{{{sel}}})"))
    since = f"max by (scope) (tripwire_breaker_state_since_timestamp_seconds{{{sel}}})"
    left = (f"min by (scope) (tripwire_budget_remaining_ratio{{{scope_sel}}}) "
            f"and on (scope) max by (scope) (tripwire_breaker_state_info{{{sel}}})")
    tgts = [target(info, ref="A", instant=True, fmt="table"),
            target(f"time() - {since}", ref="B", instant=True, fmt="table"),
            target(f"{since} * 1000", ref="C", instant=True, fmt="table"),
            target(left, ref="D", instant=True, fmt="table")]
    p = table(title, tgts, description=description, hide=("Time", "Value #A"),
              rename={"scope": "Scope", "state": "State", "budget": "Budget", "reason": "Reason",
                      "evidence": "Evidence", "Value #B": "For", "Value #C": "Since", "Value #D": "Budget left"})
    for name, unit in (("For", "s"), ("Since", "dateTimeAsIso"), ("Budget left", "percentunit")):
        field_props(p, name, unit=unit)
    for name in ("agent", "runbook"):
        field_props(p, name, custom__hidden=True)
    with_links(p, [agent_link(), runbook_link("${__data.fields.runbook}")], field="Scope")
    with_links(p, [runbook_link("${__data.fields.runbook}")], field="State")
    return p


def alerts_table(title: str, drill: bool) -> dict:
    """Firing alerts with their runbook link (ALERTS has no annotations: joined with the
    ``tripwire:alert_runbook:info`` recording rules, one per alert, carrying its ``runbook_url``)."""
    sel = f'alertstate="firing", service="tripwire", drill{"=" if drill else "!="}"true"'
    expr = (f"max by (alertname, severity, scope, budget, runbook_url) (ALERTS{{{sel}}} "
            f"* on (alertname) group_left (runbook_url) tripwire:alert_runbook:info)")
    p = table(title, [target(expr, instant=True, fmt="table")],
              description="Alerts of deploy/prometheus/rules currently firing; the Runbook column links to the "
                          "section for the alert (runbook_url, base set by runbook_base_url).",
              hide=("Time", "Value"), rename={"alertname": "Alert", "severity": "Severity", "scope": "Scope",
                                              "budget": "Budget", "runbook_url": "Runbook"})
    with_links(p, [{"title": "Runbook", "url": "${__data.fields.Runbook}", "targetBlank": True}], field="Runbook")
    with_links(p, [agent_link("${__data.fields.agent}")], field="Scope")
    p["targets"][0]["expr"] = with_agent(p["targets"][0]["expr"])
    return p


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(items: list[tuple[dict, int, int]]) -> list[dict]:
    """Place (panel, width, height) left to right, wrapping at 24 columns; rows take a full line."""
    panels, x, y, line_h = [], 0, 0, 0
    for i, (panel, w, h) in enumerate(items, start=1):
        if panel["type"] == "row":
            if x:
                y, x, line_h = y + line_h, 0, 0
            w, h = 24, 1
        elif x + w > 24:
            y, x, line_h = y + line_h, 0, 0
        panel = {"id": i, **panel, "gridPos": {"h": h, "w": w, "x": x, "y": y}}
        panels.append(panel)
        x += w
        line_h = max(line_h, h)
        if panel["type"] == "row":
            y, x, line_h = y + 1, 0, 0
    return panels


# ---------------------------------------------------------------- template variables


def var_datasource() -> dict:
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "Prometheus",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def var_query(name, label, query, regex="", include_all=True, multi=False, all_value=".*", sort=1) -> dict:
    v = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {},
        "hide": 0,
        "includeAll": include_all,
        "multi": multi,
        "options": [],
        "refresh": 2,  # on time range change
        "regex": regex,
        "sort": sort,
    }
    if include_all:
        v["allValue"] = all_value
    return v


def var_tenant() -> dict:
    # Tenants only exist inside scope strings ("tenant:<t>/..."): the named capture groups make
    # the value "tenant:<t>/" (used as a scope prefix) and the displayed text "<t>".
    return var_query(
        "tenant", "Tenant", "label_values(tripwire_budget_remaining_ratio, scope)",
        regex="/^(?<value>tenant:(?<text>[^/]+)/).*/",
    )


def var_agent(multi=True, include_all=True) -> dict:
    # "*" is the all-agents aggregate of a tool, not an agent.
    return var_query("agent", "Agent", "label_values(tripwire_near_miss_rate, agent)",
                     regex="/^[^*]+$/", include_all=include_all, multi=multi)


def var_tool() -> dict:
    # tool="*" is the agent-level aggregate over all its tools; kept selectable on purpose.
    return var_query("tool", "Tool", 'label_values(tripwire_near_miss_rate{agent=~"$agent"}, tool)', multi=True)


def var_runbook_base() -> dict:
    """Where docs/runbooks.md is published (the worker's ``runbook_base_url``): runbook links use it."""
    return {"type": "textbox", "name": "runbook_base", "label": "Runbook base URL", "query": RUNBOOK_BASE,
            "current": {"selected": False, "text": RUNBOOK_BASE, "value": RUNBOOK_BASE}, "hide": 2,
            "options": [{"selected": True, "text": RUNBOOK_BASE, "value": RUNBOOK_BASE}]}


def var_window(default="1h") -> dict:
    return {
        "type": "custom",
        "name": "window",
        "label": "Window",
        "query": ",".join(WINDOWS),
        "current": {"selected": True, "text": default, "value": default},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [{"selected": w == default, "text": w, "value": w} for w in WINDOWS],
    }


def dashboard(uid, title, description, panels, variables, annotations=(), time_from="now-6h") -> dict:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tripwire"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "weekStart": "",
        "links": [
            {"type": "dashboards", "title": "tripwire", "tags": ["tripwire"], "asDropdown": True,
             "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
             "tooltip": "", "url": ""},
        ],
        "templating": {"list": variables},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                *annotations,
            ]
        },
        "panels": panels,
    }


# ---------------------------------------------------------------- dashboards

RATE = "$__rate_interval"
PCT_THRESH = thresholds(("green", None), ("orange", 0.05), ("red", 0.1))
BURN_THRESH = thresholds(("green", None), ("yellow", 1), ("orange", 6), ("red", 14.4))
BUDGET_THRESH = thresholds(("red", None), ("orange", 0.1), ("yellow", 0.25), ("green", 0.5))


def breaker_count(states: str) -> str:
    return f'sum(tripwire_breaker_state{{state=~"{states}", {TENANT_SCOPE}, {PROD_SCOPE}}}) or vector(0)'


def oncall_overview() -> dict:
    scope_links = [agent_link("${__field.labels.agent}")]
    items = [
        (row("Who is cut off, why, since when (production)"), 24, 1),
        (not_closed_table("Breakers not closed (production)", drill=False,
                          description="Every production scope whose breaker is not closed: the budget that moved it, "
                                      "the reason and key evidence, since when and for how long, the lowest budget "
                                      "left. Click a scope for Agent detail or its runbook section. Drill scopes are "
                                      "in the Drills row. CLI: `tripwire breakers show <scope>`."), 24, 9),
        (alerts_table("Firing alerts (production)", drill=False), 24, 6),
        (stat("Open", targets(breaker_count("open")), description="Production scopes whose breaker is open (tool tokens revoked).",
              thresh=thresholds(("green", None), ("red", 1)), color_mode="background"), 4, 4),
        (stat("Escalated (awaiting approval)", targets(breaker_count("escalated")),
              description="Production scopes waiting for a human to approve consequential tool use.",
              thresh=thresholds(("green", None), ("orange", 1)), color_mode="background"), 4, 4),
        (stat("Forced open (kill switch)", targets(breaker_count("forced_open")),
              thresh=thresholds(("green", None), ("purple", 1)), color_mode="background"), 4, 4),
        (stat("Half-open (probation)", targets(breaker_count("half_open")),
              thresh=thresholds(("green", None), ("yellow", 1))), 4, 4),
        (stat("Shadow", targets(breaker_count("shadow")), thresh=thresholds(("blue", None))), 4, 4),
        (stat("Time since last successful drill",
              targets("time() - max(tripwire_drill_last_success_timestamp_seconds)"), unit="s",
              description="TripwireDrillOverdue fires after 7 days (or when no drill result exists).",
              thresh=thresholds(("green", None), ("orange", 5 * 86400), ("red", 7 * 86400)),
              color_mode="background"), 4, 4),
        (timeseries("Breaker transitions",
                    targets((f"sum by (to) (increase(tripwire_breaker_transitions_total[{RATE}]))", "to {{to}}")),
                    bars=True, stack=True), 12, 7),
        (with_links(timeseries("Denied gateway calls by scope (production)",
                               targets((with_agent(f"topk(10, sum by (scope) (increase(tripwire_authz_denied_total"
                                                   f"{{{TENANT_SCOPE}, {PROD_SCOPE}}}[{RATE}])))"), "{{scope}}")),
                               bars=True, stack=True,
                               description="GET /v1/authz calls each scope's breaker denied (top 10)."),
                    scope_links), 12, 7),
        (row("Drills"), 24, 1),
        (not_closed_table("Drill breakers not closed", drill=True, scope_sel=DRILL_SCOPE,
                          description="Scopes of drill agents (`tripwire drill`): expected to open and close during a "
                                      "drill; never counted in the production panels. Tenant filter does not "
                                      "apply."), 12, 7),
        (alerts_table("Firing drill alerts", drill=True), 12, 7),
        (timeseries("Drill runs", targets((f"sum by (result) (increase(tripwire_drill_runs_total[{RATE}]))", "{{result}}")),
                    bars=True, stack=True), 24, 6),
        (row("Budgets (production)"), 24, 1),
        (timeseries("Budget burn-down (lowest remaining per budget)",
                    targets((f"min by (budget) (tripwire_budget_remaining_ratio{{{TENANT_SCOPE}, {PROD_SCOPE}}})", "{{budget}}")),
                    unit="percentunit", max_=1, thresh=BUDGET_THRESH,
                    description="Share of each risk budget left, worst production scope per budget. 0 = exhausted."), 12, 8),
        (with_links(bargauge("Lowest budget remaining by scope",
                             [target(with_agent(f"bottomk(10, min by (budget, scope) (tripwire_budget_remaining_ratio"
                                                f"{{{TENANT_SCOPE}, {PROD_SCOPE}}}))"),
                                     "{{budget}} · {{scope}}", instant=True)],
                             thresh=BUDGET_THRESH, max_=1), scope_links), 12, 8),
        (with_links(timeseries("Highest burn rates ($window)",
                               targets((with_agent(f'topk(10, max by (budget, scope) (tripwire_burn_rate{{window="$window", '
                                                   f'{TENANT_SCOPE}, {PROD_SCOPE}}}))'),
                                        "{{budget}} · {{scope}}")),
                               unit="x", thresh=BURN_THRESH,
                               description="Burn rate 1 = on track to use exactly the budget. Page thresholds: 14.4 (1h & 5m), 6 (6h & 30m)."),
                    scope_links), 24, 8),
        (row("Near-misses"), 24, 1),
        (with_links(timeseries("Near-miss rate by agent ($window, all tools)",
                               targets(('max by (agent) (tripwire_near_miss_rate{agent=~"$agent", agent!="*", agent!~"drill-.*", '
                                        'tool="*", window="$window"})', "{{agent}}")),
                               unit="percentunit", min_=0,
                               description="monitor_flag events per tool_call, per production agent (tool=\"*\" "
                                           "aggregate). Tenant filter does not apply."),
                    [agent_link("${__field.labels.agent}")]), 12, 8),
        (timeseries("Global near-miss ratio (from event counters)",
                    targets(("tripwire:near_miss:ratio_rate5m", "5m"), ("tripwire:near_miss:ratio_rate1h", "1h"),
                            ("tripwire:near_miss:ratio_rate1d", "1d")),
                    unit="percentunit", min_=0,
                    description="Recording rules tripwire:near_miss:ratio_rate<window>: rate(monitor_flag) / rate(tool_call)."),
         12, 8),
        (row("Pipeline"), 24, 1),
        (timeseries("Decision latency (event time → breaker decision)",
                    targets(*[(f"histogram_quantile({q}, sum by (le) (rate(tripwire_decision_latency_seconds_bucket[{RATE}])))",
                               f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)]),
                    unit="s", thresh=thresholds(("green", None), ("red", 60))), 12, 8),
        (timeseries("Dead letters by reason",
                    targets((f"sum by (reason) (rate(tripwire_events_rejected_total[{RATE}]))", "{{reason}}")),
                    unit="reqps", stack=True), 12, 8),
    ]
    return dashboard(
        "tripwire-oncall", "tripwire / On-call overview",
        "Who is cut off, why, since when and what to do; then budgets, near-misses and pipeline health.",
        layout(items), [var_datasource(), var_tenant(), var_agent(), var_tool(), var_window(), var_runbook_base()],
    )


def agent_detail() -> dict:
    drift_annotation = {
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": "orange",
        "name": "Drift",
        "expr": 'sum by (agent, signal) (increase(tripwire_drift_detected_total{agent=~"$agent"}[2m])) > 0',
        "step": "1m",
        "titleFormat": "Drift: {{signal}}",
        "textFormat": "agent {{agent}}",
        "tagKeys": "agent,signal",
        "useValueForTime": False,
    }
    band_overrides = [
        {"matcher": {"id": "byRegexp", "options": ".*(lower|upper)$"},
         "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 4]}},
                        {"id": "custom.fillOpacity", "value": 0}]},
    ]
    items = [
        (row("Near-misses"), 24, 1),
        (timeseries("Near-miss rate with 95 % interval ($window)",
                    targets(('tripwire_near_miss_rate{agent=~"$agent", tool=~"$tool", window="$window"}', "{{tool}}"),
                            ('tripwire_near_miss_rate_lower{agent=~"$agent", tool=~"$tool", window="$window"}', "{{tool}} lower"),
                            ('tripwire_near_miss_rate_upper{agent=~"$agent", tool=~"$tool", window="$window"}', "{{tool}} upper")),
                    unit="percentunit", min_=0, overrides=band_overrides,
                    description='Point estimate and 95 % interval; tool "*" is all tools of the agent. '
                                "A wide interval means little evidence."), 16, 9),
        (bargauge("Near-miss rate by tool ($window)",
                  [target('tripwire_near_miss_rate{agent=~"$agent", tool!="*", window="$window"}', "{{tool}}", instant=True)],
                  thresh=PCT_THRESH), 8, 9),
        (timeseries("Near-miss rate by window (all tools)",
                    targets(('tripwire_near_miss_rate{agent=~"$agent", tool="*"}', "{{window}}")),
                    unit="percentunit", min_=0), 12, 8),
        (timeseries("Drift detections",
                    targets((f'sum by (signal) (increase(tripwire_drift_detected_total{{agent=~"$agent"}}[{RATE}]))', "{{signal}}")),
                    bars=True, stack=True,
                    description="Also shown as orange annotations on every panel."), 12, 8),
        (row("Budgets and breakers"), 24, 1),
        (timeseries("Burn rate by window",
                    targets((f"max by (budget, window) (tripwire_burn_rate{{{AGENT_SCOPE}}})", "{{budget}} {{window}}")),
                    unit="x", thresh=BURN_THRESH,
                    description="Scopes of the agent (agent:<id> and agent:<id>/tool:<name>)."), 12, 8),
        (with_links(timeseries("Budget remaining",
                               targets((f"min by (budget, scope) (tripwire_budget_remaining_ratio{{{AGENT_SCOPE}}})",
                                        "{{budget}} · {{scope}}")),
                               unit="percentunit", max_=1, thresh=BUDGET_THRESH),
                    [runbook_link("tripwireburnratepage")]), 12, 8),
        (not_closed_table("Breakers not closed of the agent's scopes", drill=None, scope_sel=AGENT_SCOPE,
                          description="The agent's scopes whose breaker is not closed (a closed scope has no row): "
                                      "budget, reason, evidence, since when; the State links to the runbook."), 24, 6),
        (row("Reliability"), 24, 1),
        (timeseries("Reliability@K (pass@k)",
                    targets(('tripwire_reliability_at_k{agent=~"$agent"}', "{{agent}} k={{k}}")),
                    unit="percentunit", min_=0, max_=1,
                    description="Reliability@K by the agent's attempt shape (label shape). retry: tasks whose first success is at attempt <= K / tasks whose outcome within K is known (in-flight tasks left out). trial: unbiased pass@k over tasks with >= K trials. Formulas: docs/metrics.md, Reliability."), 12, 8),
        (timeseries("Consistency@K (pass^k)",
                    targets(('tripwire_consistency_at_k{agent=~"$agent"}', "{{agent}} k={{k}}")),
                    unit="percentunit", min_=0, max_=1,
                    description="Consistency pass^k: chance that K independent trials of a task all succeed, mean of C(c,K)/C(n,K). Trial-shaped agents only (retries stop at the first success: no series)."), 12, 8),
        (stat("MTBCE", targets(('tripwire_mtbce_seconds{agent=~"$agent"}', "{{agent}}")), unit="s",
              description="MTBCE: clock time observed (latest - first event) / incidents at or above the policy's materiality severity (default high; no severity counts). +Inf (no material incident yet): see tripwire_mtbce_seconds_lower for the 95% lower bound."), 6, 5),
        (stat("Intervene-to-success", targets(('tripwire_intervene_to_success_ratio{agent=~"$agent"}', "{{agent}}")),
              unit="percentunit", thresh=thresholds(("green", None), ("orange", 0.2), ("red", 0.5)),
              description="Intervene-to-success: successful task outcomes with intervened=true / successful task outcomes (share of successes that needed a monitor or human)."), 6, 5),
        (stat("Cost of confidence", targets(('tripwire_cost_of_confidence_usd{agent=~"$agent"}', "{{agent}}")),
              unit="currencyUSD",
              description="Cost of confidence: spend to be X (policy reliability.confidence, default 95%) sure a task has succeeded = least K with Reliability@K >= X, times spend per attempt. +Inf: X is never reached by the observed attempts (tripwire_cost_of_confidence_undefined{reason=unreachable})."), 6, 5),
        (stat("Safe refusal precision / recall",
              targets(('tripwire_safe_refusal_precision{agent=~"$agent"}', "{{agent}} precision"),
                      ('tripwire_safe_refusal_recall{agent=~"$agent"}', "{{agent}} recall")),
              unit="percentunit", thresh=thresholds(("red", None), ("orange", 0.8), ("green", 0.95))), 6, 5),
        (timeseries("Safe refusal precision and recall",
                    targets(('tripwire_safe_refusal_precision{agent=~"$agent"}', "{{agent}} precision"),
                            ('tripwire_safe_refusal_recall{agent=~"$agent"}', "{{agent}} recall")),
                    unit="percentunit", min_=0, max_=1), 12, 8),
        (timeseries("MTBCE and cost of confidence",
                    targets(('tripwire_mtbce_seconds{agent=~"$agent"}', "{{agent}} MTBCE"),
                            ('tripwire_cost_of_confidence_usd{agent=~"$agent"}', "{{agent}} cost of confidence")),
                    overrides=[
                        {"matcher": {"id": "byRegexp", "options": ".*MTBCE$"},
                         "properties": [{"id": "unit", "value": "s"}]},
                        {"matcher": {"id": "byRegexp", "options": ".*cost of confidence$"},
                         "properties": [{"id": "unit", "value": "currencyUSD"}, {"id": "custom.axisPlacement", "value": "right"}]},
                    ],
                    description='MTBCE in seconds (left axis) and cost of confidence in USD (right axis); definitions in docs/metrics.md, Reliability. +Inf values are not drawn.'), 12, 8),
    ]
    return dashboard(
        "tripwire-agent", "tripwire / Agent detail",
        "One agent: near-miss rate and interval, burn rates, breakers, drift and reliability metrics.",
        layout(items),
        [var_datasource(), var_tenant(), var_agent(multi=False, include_all=False), var_tool(), var_window(),
         var_runbook_base()],
        annotations=[drift_annotation], time_from="now-24h",
    )


def service_health() -> dict:
    inst = 'instance=~"$instance"'
    items = [
        (row("Workers"), 24, 1),
        (stat("Workers up", targets(f'sum(up{{job="tripwire", {inst}}})'),
              thresh=thresholds(("red", None), ("green", 1)), color_mode="background"), 4, 4),
        (stat("Workers ready", targets(f"sum(tripwire_worker_ready{{{inst}}})"),
              thresh=thresholds(("red", None), ("green", 1)), color_mode="background"), 4, 4),
        (stat("Version", targets((f"count by (version) (tripwire_build_info{{{inst}}})", "{{version}}")),
              text_mode="name"), 4, 4),
        (stat("Policy version", targets((f"count by (version) (tripwire_policy_info{{{inst}}})", "{{version}}")),
              text_mode="name"), 4, 4),
        (stat("Dead-letter ratio (5m)", targets("tripwire:dead_letter:ratio_rate5m"), unit="percentunit",
              thresh=PCT_THRESH), 4, 4),
        (stat("Decision latency p99 (5m)", targets("tripwire:decision_latency_seconds:p99_rate5m"), unit="s",
              thresh=thresholds(("green", None), ("red", 60))), 4, 4),
        (row("Throughput"), 24, 1),
        (timeseries("Kafka messages consumed", targets((f"sum(rate(tripwire_messages_total{{{inst}}}[{RATE}]))", "messages/s")),
                    unit="reqps"), 12, 8),
        (timeseries("Accepted events by kind",
                    targets((f"sum by (kind) (rate(tripwire_events_total{{{inst}}}[{RATE}]))", "{{kind}}")),
                    unit="reqps", stack=True), 12, 8),
        (timeseries("Consumer lag", targets((f"sum by (topic, partition) (tripwire_consumer_lag_messages{{{inst}}})",
                                             "{{topic}}/{{partition}}")),
                    thresh=thresholds(("green", None), ("red", 10000))), 12, 8),
        (timeseries("Rejected events (dead letters) by reason",
                    targets((f"sum by (reason) (rate(tripwire_events_rejected_total{{{inst}}}[{RATE}]))", "{{reason}}")),
                    unit="reqps", stack=True), 12, 8),
        (timeseries("Duplicate and late events",
                    targets((f"sum(rate(tripwire_events_duplicate_total{{{inst}}}[{RATE}]))", "duplicates"),
                            (f"sum(rate(tripwire_events_late_total{{{inst}}}[{RATE}]))", "late")),
                    unit="reqps"), 12, 8),
        (timeseries("Decision latency",
                    targets(*[(f"histogram_quantile({q}, sum by (le) (rate(tripwire_decision_latency_seconds_bucket{{{inst}}}[{RATE}])))",
                               f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)]),
                    unit="s"), 12, 8),
        (row("Authz (gateways)"), 24, 1),
        (timeseries("Authz requests by decision",
                    targets((f"sum by (decision) (rate(tripwire_authz_requests_total{{{inst}}}[{RATE}]))", "{{decision}}")),
                    unit="reqps", stack=True), 12, 8),
        (timeseries("Authz latency",
                    targets(*[(f"histogram_quantile({q}, sum by (le) (rate(tripwire_authz_request_duration_seconds_bucket{{{inst}}}[{RATE}])))",
                               f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)],
                            (f"sum(rate(tripwire_authz_request_duration_seconds_sum{{{inst}}}[{RATE}])) / "
                             f"sum(rate(tripwire_authz_request_duration_seconds_count{{{inst}}}[{RATE}]))", "mean")),
                    unit="s"), 12, 8),
        (row("Control plane"), 24, 1),
        (timeseries("Policy reloads", targets((f"sum by (result) (increase(tripwire_policy_reloads_total{{{inst}}}[{RATE}]))", "{{result}}")),
                    bars=True, stack=True), 12, 7),
        (timeseries("Alertmanager posts by the worker",
                    targets((f"sum by (result) (rate(tripwire_alertmanager_posts_total{{{inst}}}[{RATE}]))", "{{result}}")),
                    unit="reqps", stack=True), 12, 7),
    ]
    return dashboard(
        "tripwire-service", "tripwire / Service health",
        "Worker health: throughput, consumer lag, dead letters, authz, duplicates and late events.",
        layout(items),
        [var_datasource(),
         var_query("instance", "Worker", 'label_values(up{job="tripwire"}, instance)', multi=True)],
        time_from="now-3h",
    )


DASHBOARDS = {
    "oncall-overview.json": oncall_overview,
    "agent-detail.json": agent_detail,
    "service-health.json": service_health,
}


_ALERT = re.compile(r"^\s*-\s*alert:\s*[\"']?([A-Za-z_][\w]*)")
_RUNBOOK = re.compile(r"^\s*runbook_url:\s*[\"']?([^\"'\s]+)")


def alert_runbooks(rules_dir: Path = RULES_DIR) -> dict[str, str]:
    """{alertname: runbook_url} of every alert rule in ``rules_dir`` (the runbook file itself excluded)."""
    out: dict[str, str] = {}
    for path in sorted(rules_dir.glob("*.yml")):
        if path.name == RUNBOOK_RULES:
            continue
        alert = None
        for line in path.read_text(encoding="utf-8").splitlines():
            if m := _ALERT.match(line):
                alert = m.group(1)
            elif (m := _RUNBOOK.match(line)) and alert:
                out[alert] = m.group(1)
                alert = None
    return out


def runbook_rules(rules_dir: Path = RULES_DIR) -> str:
    """A Prometheus rule file with one ``tripwire:alert_runbook:info`` series per alert (value 1, labels
    ``alertname`` and ``runbook_url``): ``ALERTS`` carries no annotations, so the on-call dashboard joins
    ``ALERTS * on (alertname) group_left (runbook_url) tripwire:alert_runbook:info``. JSON strings are YAML."""
    lines = ["# Generated by grafana/build_dashboards.py from the alert rules of this directory: do not edit.",
             "# One series per alert carrying its runbook_url, for the on-call dashboard's alert tables",
             "# (ALERTS has no annotations). `tripwire rules` rebases runbook_url like the alert rules.",
             "groups:", "  - name: tripwire-runbooks", "    rules:"]
    for alert, url in sorted(alert_runbooks(rules_dir).items()):
        lines += ["      - record: tripwire:alert_runbook:info", "        expr: vector(1)", "        labels:",
                  f"          alertname: {json.dumps(alert)}", f"          runbook_url: {json.dumps(url)}"]
    return "\n".join(lines) + "\n"


def render(build) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def build_all() -> dict[str, str]:
    """{file name: JSON text} for every dashboard."""
    return {name: render(build) for name, build in DASHBOARDS.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    stale = []
    outputs = {args.out / name: text for name, text in build_all().items()}
    outputs[RULES_DIR / RUNBOOK_RULES] = runbook_rules()
    for path, text in outputs.items():
        name = path.name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run python grafana/build_dashboards.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
