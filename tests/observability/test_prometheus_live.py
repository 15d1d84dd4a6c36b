"""Real Prometheus, fake tripwire exporter: every rule evaluates cleanly and every dashboard query
runs and returns data.

The exporter serves every catalogue metric (docs/metrics.md) with plausible label sets, counters
growing on each scrape. This checks the queries and rules at run time (vector matching, label
sets, functions) — what `promtool check rules` cannot. The lead's e2e does the same against the
real service with `tests/observability/dashboards.py:panel_queries`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from .catalogue import RULES_DIR, catalogue, metric_names, recording_rule_names
from .conftest import free_port, require_binary
from .dashboards import load_dashboards, panel_queries, variable_queries

WINDOWS = ["5m", "30m", "1h", "6h", "1d", "3d"]
AGENTS = ["agent-1", "agent-2", "drill-1"]
TOOLS = ["shell", "search"]
SCOPES = {  # scope -> current breaker state
    "global": "closed",
    "agent:agent-1": "open",
    "tenant:acme/agent:agent-1/tool:shell": "escalated",
    "agent:agent-2": "half_open",
    "tool:search": "forced_open",
    "agent:drill-1": "open",
}
STATES = ["closed", "open", "half_open", "escalated", "forced_open", "shadow"]
BUCKETS = ["0.005", "0.05", "0.5", "1", "5", "30", "60", "120", "+Inf"]


def _lbl(**kv) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}" if kv else ""


class FakeExporter:
    """Serves /metrics with one sample set per catalogue metric; counters grow per scrape."""

    def __init__(self):
        self.n = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                exporter.n += 1
                body = exporter.render(exporter.n).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()

    def samples(self, n: int) -> dict[str, list[tuple[str, float]]]:
        s: dict[str, list[tuple[str, float]]] = {}

        def add(name, value, **labels):
            s.setdefault(name, []).append((_lbl(**labels), value))

        for kind, per in {"tool_call": 100, "llm_call": 50, "monitor_flag": 5, "incident": 1, "refusal": 2,
                          "escalation": 1, "task_outcome": 10}.items():
            add("tripwire_events_total", per * n, kind=kind)
        add("tripwire_events_rejected_total", 3 * n, reason="invalid_json")
        add("tripwire_events_rejected_total", n, reason="bad_signature")
        add("tripwire_events_duplicate_total", 2 * n)
        add("tripwire_events_late_total", n)
        add("tripwire_evaluation_errors_total", 0)
        add("tripwire_agents_spilled_total", 5 * n)
        add("tripwire_agents_live", 12)
        add("tripwire_breaker_state_records_ignored_total", 0, reason="future_updated_at")
        add("tripwire_probe_results_ignored_total", n, reason="unattested")
        add("tripwire_internal_records_unauthenticated_total", 0, topic="breaker-state", reason="bad_signature",
            outcome="ignored")
        add("tripwire_operator_actions_total", n, action="force_open", result="unauthorized")
        add("tripwire_messages_total", 40 * n)
        for p in ("0", "1"):
            add("tripwire_consumer_lag_messages", 10 + n, topic="agent-traces", partition=p)
        add("tripwire_worker_ready", 1)
        add("tripwire_cross_scope_decider", 1)
        add("tripwire_build_info", 1, version="0.1.0")
        add("tripwire_policy_info", 1, version="policy-7")
        for agent in AGENTS + ["*"]:
            for tool in TOOLS + ["*"]:
                if agent == "*" and tool == "*":
                    continue
                for w in WINDOWS:
                    add("tripwire_near_miss_rate", 0.05, agent=agent, tool=tool, window=w)
                    add("tripwire_near_miss_rate_lower", 0.02, agent=agent, tool=tool, window=w)
                    add("tripwire_near_miss_rate_upper", 0.09, agent=agent, tool=tool, window=w)
        for scope, current in SCOPES.items():
            add("tripwire_budget_remaining_ratio", 0.4, budget="near-miss", scope=scope)
            add("tripwire_budget_firing", 1 if scope == "agent:drill-1" else 0, budget="critical-incidents-low-volume",
                scope=scope, signal="critical_incident_rate")
            for w in WINDOWS:
                add("tripwire_burn_rate", 20 if scope == "agent:drill-1" else 2, budget="near-miss", scope=scope, window=w)
                add("tripwire_budget_evidence_sufficient", 1, budget="near-miss", scope=scope, window=w)
            if current == "closed":  # closed scopes have no per-scope breaker series
                continue
            drill = "true" if "agent:drill-" in scope else "false"
            for st in STATES:
                add("tripwire_breaker_state", 1 if st == current else 0, scope=scope, state=st)
            add("tripwire_breaker_state_since_timestamp_seconds", time.time() - 600, scope=scope, state=current,
                drill=drill)
            add("tripwire_breaker_state_info", 1, scope=scope, state=current, budget="near-miss",
                reason="burn 20x over 1h and 5m", evidence="burn 1h 20.0x; 1h: tool calls 40, near misses 9",
                drill=drill)
            add("tripwire_authz_denied_total", 2 * n, scope=scope)
        add("tripwire_breaker_transitions_total", n // 2 + 1, **{"from": "closed", "to": "open"})
        for kind, per in {"tool_call": 10, "monitor_flag": 1}.items():
            add("tripwire_drill_events_total", per * n, kind=kind)
        add("tripwire_drift_detected_total", n, agent="agent-1", signal="tool_mix")
        add("tripwire_drift_detected_total", n, agent="agent-1", signal="task_success")
        add("tripwire_model_changes_total", n, agent="agent-1")
        for metric in ("tripwire_decision_latency_seconds", "tripwire_authz_request_duration_seconds"):
            for i, le in enumerate(BUCKETS):
                add(f"{metric}_bucket", min(i + 1, 6) * n, le=le)
            add(f"{metric}_sum", 3.0 * n)
            add(f"{metric}_count", 6 * n)
        add("tripwire_authz_requests_total", 9 * n, decision="allow")
        add("tripwire_authz_requests_total", n, decision="deny")
        for agent in AGENTS:
            add("tripwire_agent_tool_calls_total", 100 * n, agent=agent)
            add("tripwire_agent_near_misses_total", 5 * n, agent=agent)
        for agent in AGENTS:
            for k in "1234":
                add("tripwire_reliability_at_k", 0.6 + 0.1 * int(k), agent=agent, k=k, shape="retry")
                add("tripwire_consistency_at_k", 0.9 - 0.1 * int(k), agent=agent, k=k)
            add("tripwire_mtbce_seconds", 7200, agent=agent)
            add("tripwire_mtbce_seconds_lower", 3600, agent=agent)
            add("tripwire_mtbce_seconds_upper", 36000, agent=agent)
            add("tripwire_mtbce_exposure_seconds", 14400, agent=agent)
            add("tripwire_intervene_to_success_ratio", 0.1, agent=agent)
            add("tripwire_safe_refusal_precision", 0.97, agent=agent)
            add("tripwire_safe_refusal_recall", 0.9, agent=agent)
            add("tripwire_cost_of_confidence_usd", 0.12, agent=agent)
            add("tripwire_cost_of_confidence_undefined", 1, agent=agent, reason="unreachable")
        for result in ("ok", "error"):
            add("tripwire_alertmanager_posts_total", n, result=result)
            add("tripwire_policy_reloads_total", n, result=result)
        add("tripwire_drill_runs_total", n, result="pass")
        add("tripwire_drill_runs_total", 1, result="fail")
        add("tripwire_drill_last_success_timestamp_seconds", time.time() - 3600)
        add("tripwire_otlp_messages_total", 4 * n, result="ok")
        add("tripwire_otlp_spans_total", 10 * n, result="mapped")
        add("tripwire_otlp_spans_skipped_total", n, reason="no_operation")
        add("tripwire_http_ingest_requests_total", n, status="200")
        add("tripwire_http_ingest_events_total", 5 * n, result="accepted")
        return s

    def render(self, n: int) -> str:
        samples = self.samples(n)
        lines = []
        for name, typ in catalogue().items():
            lines.append(f"# TYPE {name} {typ}")
            series = [name + suf for suf in ("_bucket", "_sum", "_count")] if typ == "histogram" else [name]
            for sname in series:
                for labels, value in samples[sname]:
                    lines.append(f"{sname}{labels} {value}")
        return "\n".join(lines) + "\n"


def test_fake_exporter_covers_catalogue():
    exp = FakeExporter()
    try:
        samples = exp.samples(1)
        for name, typ in catalogue().items():
            key = f"{name}_bucket" if typ == "histogram" else name
            assert samples.get(key), f"fake exporter has no samples for {name}"
    finally:
        exp.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    binary = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("prom")
    exporter = FakeExporter()
    # the shipped rules, with per-group intervals dropped so they evaluate every second
    rule_files = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for g in doc["groups"]:
            g.pop("interval", None)
        out = tmp / path.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        rule_files.append(str(out))
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "scrape_configs": [{"job_name": "tripwire", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = open(tmp / "prometheus.log", "w")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.2)
        # wait for a few scrapes (rate() needs two samples) and rule evaluations
        deadline = time.monotonic() + 30
        while exporter.n < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
        exporter.close()


def _query(base: str, expr: str) -> dict:
    return httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()


def test_all_rules_evaluate_cleanly(prometheus):
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    records = sum(1 for p in RULES_DIR.glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"]
                  for r in g["rules"] if "record" in r)  # one name may have several rules (tripwire:alert_runbook:info)
    assert records >= len(recording_rule_names())
    assert len(rules) == records + sum(
        1 for p in RULES_DIR.glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"] if "alert" in r
    )
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad


def test_alerts_react_to_the_fake_data(prometheus):
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    by_name = {}
    for a in alerts:
        by_name.setdefault(a["labels"]["alertname"], []).append(a["labels"])
    # escalated scope, for: 0m -> already firing, drill="false"
    assert any(lab["scope"] == "tenant:acme/agent:agent-1/tool:shell" and lab["drill"] == "false"
               for lab in by_name.get("TripwireBreakerEscalated", []))
    # open drill scope (pending, for: 1m) is labelled drill="true"
    assert any(lab["scope"] == "agent:drill-1" and lab["drill"] == "true" for lab in by_name.get("TripwireBreakerOpen", []))
    assert "TripwireDrillOverdue" not in by_name  # last success one hour ago
    # the low-volume harm budget fires on the drill scope only (for: 0m), drill="true"
    harm = by_name.get("TripwireHarmBudgetFiring", [])
    assert [(lab["scope"], lab["budget"], lab["drill"]) for lab in harm] == [
        ("agent:drill-1", "critical-incidents-low-volume", "true")]


SETTINGS = [
    {},  # everything "All"
    {"tenant": "tenant:acme/", "agent": "agent-1", "tool": "shell", "window": "5m"},
]


@pytest.mark.parametrize("variables", SETTINGS, ids=["all", "one-tenant-agent"])
def test_every_dashboard_query_returns_data(prometheus, variables):
    failures = []
    for name, dash in load_dashboards().items():
        for dashboard, panel, expr in panel_queries(dash, variables) + variable_queries(dash, variables):
            res = _query(prometheus, expr)
            if res.get("status") != "success":
                failures.append(f"ERROR {dashboard} / {panel}: {res.get('error')} :: {expr}")
            elif not res["data"]["result"]:
                failures.append(f"EMPTY {dashboard} / {panel} :: {expr} (uses {sorted(metric_names(expr))})")
    assert not failures, "\n".join(failures)
