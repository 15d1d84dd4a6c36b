"""Grafana dashboards: generated JSON is current, queries use real metrics and parse, layout sane."""

from __future__ import annotations

import re

import importlib.util
import itertools
import json

import pytest
import yaml

from .catalogue import allowed_names, metric_names
from .conftest import GRAFANA_DIR, run
from .dashboards import (
    DEFAULT_VARIABLES,
    iter_panels,
    load_dashboards,
    panel_queries,
    substitute,
    variable_queries,
)

DS_REF = {"type": "prometheus", "uid": "${datasource}"}
WINDOWS = ["5m", "30m", "1h", "6h", "1d", "3d"]
EXPECTED_FILES = {"oncall-overview.json", "agent-detail.json", "service-health.json"}


def _builder():
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA_DIR / "build_dashboards.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DASHBOARDS = load_dashboards()


def test_expected_dashboards_exist():
    assert set(DASHBOARDS) == EXPECTED_FILES


def test_committed_json_matches_generator():
    built = _builder().build_all()
    assert set(built) == EXPECTED_FILES
    for name, text in built.items():
        committed = (GRAFANA_DIR / "dashboards" / name).read_text(encoding="utf-8")
        assert committed == text, f"{name} is stale: run `python grafana/build_dashboards.py`"


def test_generator_check_mode():
    assert _builder().main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_dashboard_structure(name):
    d = DASHBOARDS[name]
    assert 36 <= d["schemaVersion"] <= 41
    assert d["uid"] and d["title"].startswith("tripwire")
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DS_REF
            assert "label_values(" in v["definition"]
    ids = [p["id"] for p in iter_panels(d["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in iter_panels(d["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS_REF, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_REF, p["title"]
    for a in d["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"] == DS_REF


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_layout_no_overlap(name):
    cells = set()
    for p in DASHBOARDS[name]["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x, y in itertools.product(range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])):
            assert (x, y) not in cells, f"{p['title']} overlaps another panel"
            cells.add((x, y))


@pytest.mark.parametrize("name", ["oncall-overview.json", "agent-detail.json"])
def test_agent_dashboards_have_tenant_agent_tool(name):
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    for var in ("tenant", "agent", "tool"):
        assert variables[var]["type"] == "query"
        assert variables[var]["definition"].startswith("label_values(")


def _all_concrete_queries():
    """Every query of every dashboard, under every `window` value and a one-tenant/agent setting."""
    settings = [{"window": w} for w in WINDOWS] + [
        {"tenant": "tenant:acme/", "agent": "agent-1", "tool": "shell"},
    ]
    out = set()
    for name, dash in DASHBOARDS.items():
        for s in settings:
            for q in panel_queries(dash, s) + variable_queries(dash, s):
                out.add((name,) + q)
    return sorted(out)


CONCRETE = _all_concrete_queries()


def test_every_panel_query_uses_catalogue_metrics():
    allowed = allowed_names()
    problems = []
    for name, _title, panel, expr in CONCRETE:
        unknown = metric_names(expr) - allowed
        if unknown:
            problems.append(f"{name} / {panel}: {sorted(unknown)} in {expr}")
    assert not problems, "\n".join(problems)


def test_metric_name_check_catches_typos():
    allowed = allowed_names()
    assert metric_names('sum(rate(tripwire_event_total{kind="x"}[5m]))') - allowed == {"tripwire_event_total"}
    assert metric_names('histogram_quantile(0.9, sum by (le) (rate(tripwire_decision_latency_seconds_bucket[1m])))') <= allowed
    assert metric_names("tripwire:near_miss:ratio_rate1h") <= allowed
    assert metric_names('{__name__="tripwire_nope"}') == {"tripwire_nope"}


def test_required_metrics_on_dashboards():
    def used(name):
        return set().union(*(metric_names(e) for n, _t, _p, e in CONCRETE if n == name))

    oncall = used("oncall-overview.json")
    assert {"tripwire_breaker_state", "tripwire_budget_remaining_ratio", "tripwire_near_miss_rate",
            "tripwire_decision_latency_seconds_bucket", "tripwire_events_rejected_total",
            "tripwire_drill_last_success_timestamp_seconds", "tripwire_burn_rate"} <= oncall
    agent = used("agent-detail.json")
    assert {"tripwire_near_miss_rate", "tripwire_near_miss_rate_lower", "tripwire_near_miss_rate_upper",
            "tripwire_burn_rate", "tripwire_drift_detected_total", "tripwire_reliability_at_k",
            "tripwire_consistency_at_k", "tripwire_mtbce_seconds", "tripwire_intervene_to_success_ratio",
            "tripwire_safe_refusal_precision", "tripwire_safe_refusal_recall",
            "tripwire_cost_of_confidence_usd"} <= agent
    service = used("service-health.json")
    assert {"tripwire_messages_total", "tripwire_events_total", "tripwire_consumer_lag_messages",
            "tripwire_events_rejected_total", "tripwire_authz_requests_total",
            "tripwire_authz_request_duration_seconds_bucket", "tripwire_events_duplicate_total",
            "tripwire_events_late_total"} <= service
    # drift shown as annotations from counter increases
    ann = [a for a in DASHBOARDS["agent-detail.json"]["annotations"]["list"] if "expr" in a]
    assert any("increase(tripwire_drift_detected_total" in a["expr"] for a in ann)
    # decision latency via histogram_quantile
    assert any("histogram_quantile" in e and "decision_latency" in e for n, _t, _p, e in CONCRETE if n == "oncall-overview.json")


def test_every_query_parses_with_promtool(promtool, tmp_path):
    """Offline PromQL syntax check: each concrete query as a recording rule for `promtool check rules`."""
    exprs = sorted({e for *_x, e in CONCRETE})
    rules = {"groups": [{"name": "dashboard-queries",
                         "rules": [{"record": f"dashboard_query:check:{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    res = run([promtool, "check", "rules", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr


# ---------------------------------------------------------------- panel_queries helper


def test_substitute_forms():
    v = {"agent": "a1", "tool": "shell"}
    assert substitute('x{agent=~"$agent",tool="${tool}"}[$__rate_interval]', v) == 'x{agent=~"a1",tool="shell"}[1m]'
    assert substitute('x{agent=~"${agent:regex}"} [[tool]] $__range $__interval', v) == 'x{agent=~"a1"} shell 1h 30s'
    assert substitute("$__range_s") == "3600"
    with pytest.raises(KeyError):
        substitute("x{a=\"$nope\"}")


def test_panel_queries_shape_and_nested_rows(tmp_path):
    dash = {
        "title": "t",
        "panels": [
            {"type": "row", "title": "r", "collapsed": True,
             "panels": [{"type": "timeseries", "title": "inner $window", "targets": [{"expr": "up[$__range]"}]}]},
            {"type": "text", "title": "no targets"},
        ],
        "annotations": {"list": [{"name": "Drift", "expr": "x{agent=~\"$agent\"}"}]},
    }
    assert panel_queries(dash, {"window": "5m", "agent": "a"}) == [
        ("t", "inner 5m", "up[1h]"),
        ("t", "annotation: Drift", 'x{agent=~"a"}'),
    ]
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"dashboard": dash, "meta": {}}))
    assert panel_queries(p, include_annotations=False) == [("t", "inner 1h", "up[1h]")]
    assert panel_queries(str(p), include_annotations=False) == [("t", "inner 1h", "up[1h]")]


def test_panel_queries_on_committed_dashboards():
    for name, dash in DASHBOARDS.items():
        qs = panel_queries(dash, {"agent": "agent-1"})
        assert qs, name
        for dashboard, panel, expr in qs:
            assert dashboard == dash["title"]
            # "$1": a label_replace capture group, not a Grafana variable
            assert "$" not in re.sub(r"\$\d", "", expr) and "[[" not in expr, (panel, expr)
    assert set(DEFAULT_VARIABLES) >= {"datasource", "tenant", "agent", "tool", "__rate_interval", "__interval", "__range"}


def test_variable_queries():
    qs = dict(((t, p), e) for t, p, e in variable_queries(DASHBOARDS["agent-detail.json"], {"agent": "a1"}))
    assert qs[("tripwire / Agent detail", "variable: tool")] == 'group by (tool) (tripwire_near_miss_rate{agent=~"a1"})'


# ---------------------------------------------------------------- provisioning


def test_provisioning_files():
    ds = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    assert ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "tripwire.yml").read_text())
    assert prov["apiVersion"] == 1
    provider = prov["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
