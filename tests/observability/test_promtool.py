"""Prometheus config, recording and alerting rules: promtool checks plus static contract checks."""

from __future__ import annotations

import re
import unicodedata

import pytest
import yaml

from .catalogue import alert_rules, allowed_names, metric_names, recording_rule_names, rule_groups
from .conftest import DOCS_DIR, PROM_DIR, run

RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))
RUNBOOK_PREFIX = "https://github.com/tripwire/tripwire/blob/main/docs/runbooks.md#"
SEVERITIES = {"page", "ticket", "info"}
WINDOWS = ["5m", "30m", "1h", "6h", "1d", "3d"]


# ---------------------------------------------------------------- promtool


def test_promtool_check_config(promtool):
    res = run([promtool, "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert res.returncode == 0, res.stdout + res.stderr
    # rule_files resolve relative to prometheus.yml and must cover every shipped rule file
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    listed = {(PROM_DIR / p).resolve() for p in cfg["rule_files"]}
    assert listed == {p.resolve() for p in RULE_FILES}


def test_prometheus_config_contract():
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert "tripwire" in jobs
    assert jobs["tripwire"].get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in jobs["tripwire"]["static_configs"] for t in sc["targets"]]
    assert "127.0.0.1:6066" in targets
    assert cfg["alerting"]["alertmanagers"], "alerting must point at Alertmanager"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool, path):
    res = run([promtool, "check", "rules", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(promtool, path):
    # run from the tests dir so relative rule_files resolve the same way as on the command line
    res = run([promtool, "test", "rules", path.name], cwd=path.parent)
    assert res.returncode == 0, res.stdout + res.stderr


# ---------------------------------------------------------------- static checks on the rules


def test_recording_rule_names():
    names = recording_rule_names()
    for w in WINDOWS:
        assert f"tripwire:near_miss:ratio_rate{w}" in names
    for name in names:
        assert re.fullmatch(r"tripwire:[a-z0-9_]+:[a-z0-9_]+", name), name


def test_recording_rules_documented():
    text = (DOCS_DIR / "metrics.md").read_text()
    for name in recording_rule_names():
        if name.startswith("tripwire:near_miss:ratio_rate"):
            continue  # documented as a range `ratio_rate5m … ratio_rate3d`
        assert f"`{name}`" in text, f"{name} missing from docs/metrics.md"


def test_rules_only_use_catalogue_metrics():
    allowed = allowed_names()
    for group in rule_groups():
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - allowed
            assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown metrics {unknown}"


def _github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, drop punctuation except - and _, spaces to -."""
    s = unicodedata.normalize("NFKD", heading).strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _runbook_anchors() -> set[str]:
    text = (DOCS_DIR / "runbooks.md").read_text()
    return {_github_anchor(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def test_alert_names_unique():
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_contract(rule):
    labels = rule.get("labels", {})
    ann = rule.get("annotations", {})
    assert labels.get("severity") in SEVERITIES
    assert labels.get("service") == "tripwire"
    assert ann.get("summary") and ann.get("description")
    url = ann.get("runbook_url", "")
    assert url.startswith(RUNBOOK_PREFIX), url
    anchor = url[len(RUNBOOK_PREFIX):]
    assert anchor == rule["alert"].lower()
    assert anchor in _runbook_anchors(), f"docs/runbooks.md has no section #{anchor}"
    # drill label: set statically to "false", or computed by label_replace from the scope/agent
    if "drill" in labels:
        assert labels["drill"] == "false"
    else:
        expr = rule["expr"]
        assert re.search(r'label_replace\(.*"drill",\s*"false"', expr, re.S), "needs drill=\"false\" default"
        assert re.search(r'"drill",\s*"true",\s*"(scope|agent)",\s*"[^"]*drill-', expr), "needs drill=\"true\" case"


def test_breaker_alerts_label_drill_scopes():
    """Every alert over a scope-labelled metric derives `drill` from the scope."""
    for rule in alert_rules():
        if re.search(r"tripwire_(breaker_state|burn_rate|budget_remaining_ratio)", rule["expr"]):
            assert "drill" not in rule.get("labels", {}), rule["alert"]
            assert '".*agent:drill-.*"' in rule["expr"], rule["alert"]


def test_runbook_has_section_per_alert_and_nothing_stale():
    anchors = _runbook_anchors()
    alert_anchors = {r["alert"].lower() for r in alert_rules()}
    assert alert_anchors <= anchors
    text = (DOCS_DIR / "runbooks.md").read_text()
    sections = {_github_anchor(h) for h in re.findall(r"^##\s+(.+?)\s*$", text, flags=re.M)}
    stale = sections - alert_anchors
    assert not stale, f"runbook sections without an alert: {stale}"
    # internal links in the runbook resolve
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in anchors, link


def test_every_alert_has_firing_and_quiet_unit_test():
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        for case in doc.get("tests", []):
            for t in case.get("alert_rule_test", []) or []:
                (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), f"alerts without a firing test: {names - firing}"
    assert names - quiet == set(), f"alerts without a not-firing test: {names - quiet}"


def test_promtool_unit_tests_load_all_rule_files():
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        for rf in doc["rule_files"]:
            assert (path.parent / rf).resolve().exists(), rf
