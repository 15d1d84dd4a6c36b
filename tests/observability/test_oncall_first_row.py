"""The on-call dashboard answers "who is cut off, why, since when, what next" (issue #17): its first row
is the table of non-closed production scopes with links, drills have their own row, production panels
leave drills out, alerts carry runbook links, and every panel where a scope appears links somewhere.
Every query also runs against a real Prometheus in test_prometheus_live.py (fake exporter) and
tests/e2e/test_prometheus_real_service.py (real worker)."""

from __future__ import annotations

import importlib.util
import re

from streams.ops import snapshot
from streams.settings import DEFAULT_RUNBOOK_BASE_URL

from .catalogue import RULES_DIR, alert_rules
from .conftest import GRAFANA_DIR
from .dashboards import iter_panels, load_dashboards


def _builder():
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA_DIR / "build_dashboards.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


B = _builder()
ONCALL = load_dashboards()["oncall-overview.json"]
AGENT = load_dashboards()["agent-detail.json"]


def _panels(d: dict) -> list[dict]:
    return [p for p in iter_panels(d["panels"])]


def test_first_row_is_the_production_not_closed_table_with_since_reason_and_links() -> None:
    panels = _panels(ONCALL)
    assert panels[0]["type"] == "row" and "production" in panels[0]["title"]
    first = panels[1]
    assert first["type"] == "table" and first["title"] == "Breakers not closed (production)"
    assert first["gridPos"]["y"] == 1 and first["gridPos"]["w"] == 24
    exprs = [t["expr"] for t in first["targets"]]
    assert any("tripwire_breaker_state_info{" in e and 'drill="false"' in e for e in exprs)
    assert any("tripwire_breaker_state_since_timestamp_seconds" in e and e.startswith("time() -") for e in exprs)
    assert any("tripwire_budget_remaining_ratio" in e for e in exprs)
    renames = first["transformations"][1]["options"]["renameByName"]
    assert {"Scope", "State", "Budget", "Reason", "Evidence", "For", "Since", "Budget left"} <= set(renames.values())
    links = {o["matcher"]["options"]: [link["url"] for prop in o["properties"] if prop["id"] == "links"
                                       for link in prop["value"]]
             for o in first["fieldConfig"]["overrides"]}
    assert any(u.startswith("/d/tripwire-agent?var-agent=${__data.fields.agent}") for u in links["Scope"])
    assert "${runbook_base}#${__data.fields.runbook}" in links["Scope"]
    assert panels[2]["type"] == "table" and "alerts" in panels[2]["title"].lower()


def test_drills_have_their_own_row_and_production_panels_leave_them_out() -> None:
    panels = _panels(ONCALL)
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert "Drills" in rows
    drill_row = rows.index("Drills")
    current = None
    for p in panels:
        if p["type"] == "row":
            current = p["title"]
            continue
        scoped = [t["expr"] for t in p["targets"] if "scope" in t["expr"] or "ALERTS" in t["expr"]]
        if current == "Drills":
            continue
        for e in scoped:
            if "tripwire_breaker_state_info" in e or "since_timestamp" in e:
                assert 'drill="false"' in e, (p["title"], e)
            elif "ALERTS" in e:
                assert 'drill!="true"' in e, (p["title"], e)
            elif re.search(r"tripwire_(breaker_state|budget_remaining_ratio|burn_rate|authz_denied_total)\{", e) \
                    and "tripwire_breaker_state_info" not in e:
                assert 'scope!~".*agent:drill-.*"' in e, (p["title"], e)
    assert drill_row > 0


def test_every_panel_with_a_scope_or_agent_has_a_data_link() -> None:
    missing = []
    for d in (ONCALL, AGENT):
        for p in _panels(d):
            if p["type"] == "row":
                continue
            legends = " ".join(t.get("legendFormat", "") for t in p["targets"])
            if "{{scope}}" in legends or ("{{agent}}" in legends and d is ONCALL) or p["type"] == "table":
                cfg = p["fieldConfig"]
                has = cfg["defaults"].get("links") or any(
                    prop["id"] == "links" for o in cfg["overrides"] for prop in o["properties"])
                if not has and "scope" in " ".join(t["expr"] for t in p["targets"]):
                    missing.append(f"{d['title']} / {p['title']}")
    assert not missing, missing


def test_alert_tables_join_the_runbook_of_every_alert() -> None:
    text = (RULES_DIR / B.RUNBOOK_RULES).read_text()
    assert text == B.runbook_rules(), "stale: run python grafana/build_dashboards.py"
    expected = {r["alert"]: r["annotations"]["runbook_url"] for r in alert_rules()}
    assert B.alert_runbooks() == expected and len(expected) >= 16
    alerts = [p for p in _panels(ONCALL) if p["type"] == "table" and "alerts" in p["title"].lower()]
    assert len(alerts) == 2
    for p in alerts:
        assert "group_left (runbook_url) tripwire:alert_runbook:info" in p["targets"][0]["expr"]


def test_runbook_anchors_and_base_are_the_ones_the_worker_and_snapshot_use() -> None:
    assert B.RUNBOOK_BASE == DEFAULT_RUNBOOK_BASE_URL
    assert B.RUNBOOK_BY_STATE == snapshot.RUNBOOK_BY_STATE
    runbooks = (RULES_DIR.parents[2] / "docs" / "runbooks.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (\S+)", runbooks, re.M)}
    assert set(B.RUNBOOK_BY_STATE.values()) <= anchors
    for d in (ONCALL, AGENT):
        (var,) = [v for v in d["templating"]["list"] if v["name"] == "runbook_base"]
        assert var["query"] == DEFAULT_RUNBOOK_BASE_URL
