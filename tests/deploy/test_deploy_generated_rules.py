"""The burn-rate alerts generated from the policy (`tripwire rules`, issue #16): in sync, read series a worker
exports, gated on minimum evidence, runbook links from one setting, drills labelled with the policy's prefix."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from breakers.policy import load_policy
from helpers.deploy import REPO
from streams.cli import main
from streams.contract.schema import TraceEvent
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.ops.rules import GENERATED_FILE, HARM_SIGNALS, render
from streams.settings import DEFAULT_POLICY, DEFAULT_RUNBOOK_BASE_URL, Settings
from streams.worker.alertmanager import AsyncAlertmanager
from streams.worker.metrics import Metrics
from streams.worker.views import monitor_families

RULES = REPO / "deploy" / "prometheus" / "rules"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TRIPWIRE_"):
            monkeypatch.delenv(name)


def test_regenerating_from_the_default_policy_gives_the_committed_file() -> None:
    policy = load_policy(DEFAULT_POLICY)
    assert (RULES / GENERATED_FILE).read_text(encoding="utf-8") == render(policy, source="default.yaml"), \
        "run: tripwire rules --policy deploy/policy/default.yaml --out deploy/prometheus/rules"
    res = CliRunner().invoke(main, ["rules", "--policy", str(DEFAULT_POLICY), "--out", str(RULES), "--check"])
    assert res.exit_code == 0, res.output


def _generated_rules() -> list[dict]:
    return yaml.safe_load((RULES / GENERATED_FILE).read_text())["groups"][0]["rules"]


def test_thresholds_and_windows_come_from_the_policy_and_every_branch_is_gated_on_evidence() -> None:
    policy = load_policy(DEFAULT_POLICY)
    by_alert = {r["alert"]: r["expr"] for r in _generated_rules()}
    want = {"TripwireBurnRatePage": set(), "TripwireBurnRateTicket": set()}
    for b in policy.budgets:
        if b.signal == "drift" or b.signal in HARM_SIGNALS:
            continue
        for r in b.windows:
            if r.burn_rate is not None:
                want["TripwireBurnRatePage" if r.severity == "page" else "TripwireBurnRateTicket"].add(
                    (b.name, r.long, r.short, r.burn_rate))
    assert {k for k, v in want.items() if v} == set(by_alert)
    for alert, expr in by_alert.items():
        burns = re.findall(r'tripwire_burn_rate\{budget="([^"]+)", window="(\w+)"\}\) > ([\d.]+)', expr)
        gates = re.findall(r'tripwire_budget_evidence_sufficient\{budget="([^"]+)", window="(\w+)"\}\) == 1', expr)
        assert len(gates) == len(want[alert])  # one evidence gate per branch
        from detectors.durations import format_duration
        for name, long, short, thr in want[alert]:
            assert (name, format_duration(long), f"{thr:g}") in burns
            assert (name, format_duration(short), f"{thr:g}") in burns
            assert (name, format_duration(long)) in gates
    # the old ticket branch read a 1d burn no budget exports
    assert 'window="1d"' not in "".join(by_alert.values())


def test_every_series_the_alerts_read_is_on_a_workers_metrics() -> None:
    """A worker on the default policy, one agent with traffic: each (metric, budget, window) selector of the
    generated rules matches a sample of its /metrics."""
    now = time.time()
    mon = Monitor(load_policy(DEFAULT_POLICY), clock=EventClock(wall=lambda: now))
    evs = [{"schema_version": "1", "event_id": f"g{i}", "ts": int(now * 1000), "agent_id": "a", "kind": "tool_call",
            "tool": "search", "status": "ok"} for i in range(30)]
    evs.append({"schema_version": "1", "event_id": "gf", "ts": int(now * 1000), "agent_id": "a",
                "kind": "monitor_flag", "tool": "search", "severity": "high"})
    mon.ingest(0, [TraceEvent.model_validate(e) for e in evs])
    mon.evaluate(now)
    metrics = Metrics()
    settings = Settings()
    metrics.add_source(lambda: monitor_families(mon, settings))
    have = set()
    for fam in text_string_to_metric_families(metrics.exposition().decode()):
        for s in fam.samples:
            if "budget" in s.labels and "window" in s.labels:
                have.add((s.name, s.labels["budget"], s.labels["window"], s.labels["scope"]))
    exprs = "".join(r["expr"] for r in _generated_rules())
    selectors = set(re.findall(r'(tripwire_\w+)\{budget="([^"]+)", window="(\w+)"\}', exprs))
    assert selectors
    for metric, budget, window in selectors:
        assert (metric, budget, window, "agent:a") in have, (metric, budget, window)


def test_runbook_base_url_is_one_setting_for_rules_and_the_alertmanager_client(tmp_path) -> None:
    base = "https://runbooks.example.org/tripwire"
    res = CliRunner().invoke(main, ["rules", "--policy", str(DEFAULT_POLICY), "--out", str(tmp_path),
                                    "--static", str(RULES), "--runbook-base-url", base])
    assert res.exit_code == 0, res.output
    urls = []
    for path in tmp_path.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            urls += [(r["alert"], r["annotations"]["runbook_url"]) for r in group["rules"] if "alert" in r]
    assert len(urls) >= 16
    assert all(url == f"{base}#{alert.lower()}" for alert, url in urls), urls
    assert DEFAULT_RUNBOOK_BASE_URL not in "".join(p.read_text() for p in tmp_path.glob("*.yml"))
    promtool = shutil.which("promtool")
    if promtool:
        out = subprocess.run([promtool, "check", "rules", *map(str, sorted(tmp_path.glob("*.yml")))],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
    # the worker's own Alertmanager posts: the same setting
    settings = Settings(runbook_base_url=base)
    am = AsyncAlertmanager("http://127.0.0.1:9", runbook_url=settings.runbook_base_url)
    alert = am._build("agent:a", alertname="TripwireBreakerOpen", summary="s", evidence=None, budget=None,
                      severity="page", drill=False, now=0.0)
    assert alert.annotations["runbook_url"] == f"{base}#tripwirebreakeropen"


def test_the_worker_passes_the_setting_to_its_alertmanager_client() -> None:
    src = (REPO / "streams" / "worker" / "app.py").read_text()
    assert "runbook_url=settings.runbook_base_url" in src


def test_drill_regexes_match_the_default_policy_prefix() -> None:
    prefix = load_policy(DEFAULT_POLICY).drill_prefix
    for path in RULES.glob("*.yml"):
        text = path.read_text()
        for regex in re.findall(r'agent:([\w\-\\]+)\.\*', text):
            assert regex.replace("\\", "") == prefix, (path.name, regex)
